package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/ipv6"
)

// sock6 is the DHCPv6 socket: one for every served link, joined to
// ff02::1:2 on each; IPV6_PKTINFO names the receiving interface.
type sock6 struct {
	c      net.PacketConn
	pc     *ipv6.PacketConn
	ifaces map[int]string // served interfaces by index
	addrs  ifaceCache
}

// Sockets6 is a Server6's socket opened ahead of Serve (Listen6): port
// 547 is bound while the process still may.
type Sockets6 struct{ k *sock6 }

// Close closes the socket (Serve closes it when it returns).
func (ss *Sockets6) Close() { ss.k.c.Close() }

// Listen6 opens the socket Serve would open for a Server6 with these
// fields (zero values mean the same defaults).
func Listen6(ctx context.Context, addr netip.AddrPort, interfaces []string) (*Sockets6, error) {
	k, err := listen6(ctx, addr, interfaces)
	if err != nil {
		return nil, err
	}
	return &Sockets6{k: k}, nil
}

func listen6(ctx context.Context, addr netip.AddrPort, interfaces []string) (*sock6, error) {
	a := "[::]:547"
	if addr.IsValid() {
		a = addr.String()
	}
	c, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp6", a)
	if err != nil {
		return nil, fmt.Errorf("dhcp6: listen %s: %w", a, err)
	}
	k := &sock6{c: c, pc: ipv6.NewPacketConn(c), ifaces: map[int]string{}, addrs: ifaceCache{v6: true}}
	for _, name := range interfaces {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			err = k.pc.JoinGroup(ifi, &net.UDPAddr{IP: allDHCP6.AsSlice()})
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("dhcp6: interface %q: joining %v: %w", name, allDHCP6, err)
		}
		k.ifaces[ifi.Index] = name
	}
	// Without IPV6_PKTINFO (not every system has it) the one served
	// interface is assumed; with several, requests are dropped.
	_ = k.pc.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true)
	setSendBuf(c)
	return k, nil
}

// pending6 is a Reply waiting for its lease to reach the disk.
type pending6 struct {
	reply []byte
	dst   *net.UDPAddr
	ifidx int
	seq   uint64
}

// Serve opens the socket (or takes Sockets), answers requests until ctx
// is cancelled (it returns nil) or Shutdown is called
// (ErrServer6Closed). One read loop answers; Replies that commit a lease
// go to one commit goroutine, which sends them once the lease is on
// disk, so Advertises never wait for a sync. Serve may be called once.
func (s *Server6) Serve(ctx context.Context, pre *Sockets6) error {
	if err := s.setup(); err != nil {
		return err
	}
	ready, err := s.begin(ErrServer6Closed, "dhcp6")
	if err != nil {
		return err
	}
	defer close(s.done)
	var k *sock6
	if pre != nil {
		k = pre.k
	} else {
		if k, err = listen6(ctx, s.Addr, s.Interfaces); err != nil {
			return err
		}
	}
	s.Log.Info().Stringer("addr", k.c.LocalAddr()).Strs("interfaces", s.Interfaces).Stringer("prefix", s.Prefix).
		Hex("duid", s.duid).Msg("dhcp6 server listening")
	close(ready)

	queue := make(chan pending6, commitQueue)
	var wg sync.WaitGroup
	wg.Go(func() {
		for p := range queue {
			if s.durable(p.seq) == nil {
				s.send(k, p)
			}
		}
	})
	wg.Go(func() {
		defer close(queue)
		s.readLoop(k, queue)
	})
	select {
	case <-ctx.Done():
	case <-s.stop:
		err = ErrServer6Closed
	}
	k.c.SetReadDeadline(time.Unix(1, 0))
	wg.Wait()
	k.c.Close()
	s.Log.Info().Msg("dhcp6 server stopped")
	return err
}

func (s *Server6) readLoop(k *sock6, queue chan<- pending6) {
	buf := make([]byte, readBufSize)
	for {
		n, cm, from, err := k.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
				return
			}
			s.Counters.ReadErrors.Add(1)
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || n >= len(buf) {
			s.Counters.BadPacket.Add(1)
			continue
		}
		ifidx := 0
		if cm != nil {
			ifidx = cm.IfIndex
		} else if len(k.ifaces) == 1 {
			for i := range k.ifaces {
				ifidx = i
			}
		}
		name, served := k.ifaces[ifidx]
		if !served {
			s.Counters.Ignored.Add(1) // another link's, or unknown
			continue
		}
		src, _ := netip.AddrFromSlice(ua.IP)
		in := Incoming6{Src: netip.AddrPortFrom(src, uint16(ua.Port)), IfIndex: ifidx}
		for _, p := range k.addrs.get(ifidx, time.Now()) {
			if s.Prefix.Contains(p.Addr()) {
				in.IfAddr = p.Addr()
				break
			}
		}
		reply, seq := s.handle(buf[:n], in, time.Now())
		if reply == nil {
			continue
		}
		s.countSent(reply)
		p := pending6{reply: reply, dst: &net.UDPAddr{IP: ua.IP, Port: ua.Port, Zone: name}, ifidx: ifidx, seq: seq}
		if seq == 0 {
			s.send(k, p)
		} else {
			queue <- p
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// send sends p without waiting (writeNow): it runs in the read loop and
// in the commit goroutine, and neither may stall on the kernel.
func (s *Server6) send(k *sock6, p pending6) {
	err := k.writeNow(p.reply, p.ifidx, p.dst)
	if err == nil {
		return
	}
	kind := sendFailed(err, &s.Counters.SendDropped, &s.Counters.SendErrors)
	s.mu.Lock()
	s.logLimited(zerolog.WarnLevel, time.Now(), kind, func(e *zerolog.Event) {
		e.Err(err).Stringer("dst", p.dst).Msg("dhcp6: send")
	})
	s.mu.Unlock()
}
