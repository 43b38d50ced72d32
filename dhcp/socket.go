package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"
)

const (
	// readBufSize holds any DHCP datagram: option 57 caps replies at
	// one Ethernet frame and requests are smaller; a datagram that fills
	// the buffer is treated as truncated.
	readBufSize = 4096
	// readBatch is how many datagrams one read takes (recvmmsg on Linux,
	// one elsewhere): the requests that queued while the reader worked.
	// 32 × readBufSize is 128 KiB per socket.
	readBatch = 32
	// commitQueue bounds the batches of replies waiting for the lease
	// file; a full queue holds the reader back (the kernel's receive
	// buffer absorbs the burst) rather than dropping what we decided.
	commitQueue = 256
	// ifaceTTL is how long an interface's addresses are cached.
	ifaceTTL = 30 * time.Second
)

// sock is one listening socket.
type sock struct {
	c      net.PacketConn
	pc     *ipv4.PacketConn
	role   int    // PortServer or PortProxy
	ifname string // SO_BINDTODEVICE, "" = any
	bound  netip.Addr
}

// pending is a reply waiting for its lease change to reach the disk.
type pending struct {
	out *Outgoing // nil: a DECLINE, nothing to send
	src netip.Addr
}

// held is one read batch's replies that wait for the disk, until change
// seq is durable.
type held struct {
	k   *sock
	ps  []pending
	seq uint64
}

// Serve opens the sockets (Addr, and ProxyPort in proxy mode; one per
// interface with Interfaces; SO_REUSEADDR, SO_BROADCAST, IP_PKTINFO) and
// answers requests until ctx is cancelled (it returns nil) or Shutdown is
// called (ErrServerClosed). Each socket has one read loop, which reads
// the requests queued on it in batches. A reader whose batch drained its
// socket writes the lease file itself when no write runs and syncs are
// quick; otherwise the writes run in one more goroutine, which takes a
// batch's ACKs at once, so a reader with a backlog never waits for the
// disk while writes are grouped (readLoop). Replies waiting for the disk
// are still sent when Serve stops; then the lease file is flushed. Serve
// may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.setup(); err != nil {
		return err
	}
	ready, err := s.begin(ErrServerClosed, "dhcp")
	if err != nil {
		return err
	}
	defer close(s.done)

	var socks []*sock
	if pre := s.Sockets; pre != nil {
		if pre.mode != s.mode {
			pre.Close()
			return fmt.Errorf("dhcp: Sockets were opened for mode %q, the server runs %q", pre.mode, s.mode)
		}
		socks = pre.socks
	} else if socks, err = s.listen(ctx); err != nil {
		return err
	}
	s.life.Lock()
	s.socks = socks
	s.life.Unlock()
	for _, k := range socks {
		s.Log.Info().Stringer("addr", k.c.LocalAddr()).Str("interface", k.ifname).Int("role", k.role).
			Str("mode", string(s.mode)).Msg("dhcp server listening")
	}
	close(ready)

	queue := make(chan held, commitQueue)
	var committer, readers sync.WaitGroup
	committer.Go(func() { s.commitLoop(queue) })
	var stopping atomic.Bool
	for _, k := range socks {
		readers.Go(func() { s.readLoop(k, queue, &stopping) })
	}

	select {
	case <-ctx.Done():
	case <-s.stop:
		err = ErrServerClosed
	}
	// Wake the readers with a deadline rather than a close, so replies
	// still waiting for the disk can go out on their sockets.
	stopping.Store(true)
	for _, k := range socks {
		k.c.SetReadDeadline(time.Unix(1, 0))
	}
	readers.Wait()
	close(queue)
	committer.Wait()
	for _, k := range socks {
		k.c.Close()
	}
	s.life.Lock()
	s.socks = nil
	s.life.Unlock()
	s.mu.Lock()
	seq := s.leases.seq
	s.mu.Unlock()
	if ferr := s.durable(seq); ferr != nil {
		return ferr
	}
	s.Log.Info().Msg("dhcp server stopped")
	return err
}

// Addrs returns the local addresses of Serve's sockets while they are
// open (empty before and after).
func (s *Server) Addrs() []net.Addr {
	s.life.Lock()
	defer s.life.Unlock()
	out := make([]net.Addr, 0, len(s.socks))
	for _, k := range s.socks {
		out = append(out, k.c.LocalAddr())
	}
	return out
}

// Sockets are a server's listening sockets opened ahead of Serve by
// Listen: port 67 (and 4011) is bound while the process still may, and
// Serve, which reads requests, runs after it has dropped privileges.
type Sockets struct {
	mode  Mode
	socks []*sock
}

// Listen opens the sockets Serve would open for a Server with these
// fields (zero values mean the same defaults). Set them as the Server's
// Sockets before Serve; Close them if Serve never runs.
func Listen(ctx context.Context, mode Mode, addr netip.AddrPort, proxyPort int, interfaces []string) (*Sockets, error) {
	s := &Server{mode: mode, addr: listenAddr(addr), proxyPort: proxyPort, Interfaces: interfaces}
	if s.mode == "" {
		s.mode = ModeServer
	}
	if s.proxyPort == 0 {
		s.proxyPort = PortProxy
	}
	socks, err := s.listen(ctx)
	if err != nil {
		return nil, err
	}
	return &Sockets{mode: s.mode, socks: socks}, nil
}

// Close closes the sockets (Serve closes them when it returns).
func (ss *Sockets) Close() {
	for _, k := range ss.socks {
		k.c.Close()
	}
}

// listen opens every socket or none.
func (s *Server) listen(ctx context.Context) ([]*sock, error) {
	host, _, _ := net.SplitHostPort(s.addr) // host:port, made by listenAddr
	type want struct {
		addr string
		role int
	}
	wants := []want{{s.addr, PortServer}}
	if s.mode == ModeProxy {
		wants = append(wants, want{net.JoinHostPort(host, strconv.Itoa(s.proxyPort)), PortProxy})
	}
	ifnames := s.Interfaces
	if len(ifnames) == 0 {
		ifnames = []string{""}
	}
	var socks []*sock
	fail := func(err error) ([]*sock, error) {
		for _, k := range socks {
			k.c.Close()
		}
		return nil, err
	}
	for _, name := range ifnames {
		if name != "" {
			if _, err := net.InterfaceByName(name); err != nil {
				return fail(fmt.Errorf("dhcp: Interfaces: %q: %w", name, err))
			}
		}
		for _, w := range wants {
			c, err := listenUDP(ctx, w.addr, name, s.mode == ModeProxy)
			if err != nil {
				return fail(fmt.Errorf("dhcp: listen %s (interface %q): %w", w.addr, name, err))
			}
			setSendBuf(c)
			k := &sock{c: c, pc: ipv4.NewPacketConn(c), role: w.role, ifname: name}
			socks = append(socks, k)
			if err := k.pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
				return fail(fmt.Errorf("dhcp: IP_PKTINFO on %s: %w", w.addr, err))
			}
			if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
				k.bound = addrOf(ua.IP)
			}
		}
	}
	return socks, nil
}

// readLoop reads one socket until Serve stops, a batch of the datagrams
// queued at a time. Replies that need no disk go at once. For replies
// that commit a lease, and for the promises of OFFERs (promise.go), the
// loop chooses who writes the journal (docs/dhcp-leases.md, "Who
// writes"):
//   - the loop itself, when its batch drained the socket (fewer than
//     readBatch datagrams, where reads are batched), no write runs and
//     the last append's sync was quick (quickSyncs): nothing is waiting
//     to be read, so the write holds up only what arrives during it, and
//     no other thread has to be woken for it. A promise-carrying OFFER
//     leaves before the write starts.
//   - the commit goroutine otherwise, one item per batch, so that a
//     reader with a backlog, or on a slow disk, keeps reading while the
//     disk works. OFFERs that carry a promise then go at the end of the
//     batch: after their promises are queued to be written, or, when the
//     batch also holds replies for the commit queue, just before that
//     item, which takes the promises along.
func (s *Server) readLoop(k *sock, queue chan<- held, stopping *atomic.Bool) {
	ms := make([]ipv4.Message, readBatch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, readBufSize)}
		ms[i].OOB = ipv4.NewControlMessage(ipv4.FlagDst | ipv4.FlagInterface)
	}
	cms := make([]ipv4.ControlMessage, readBatch)
	offers := make([]pending, 0, readBatch) // OFFERs whose promise is written first
	for {
		n, err := k.readBatch(ms, cms)
		if err != nil {
			if stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.Counters.ReadErrors.Add(1)
			s.logged("read-error", func(e *zerolog.Event) { e.Err(err).Msg("dhcp: read") })
			continue
		}
		h := held{k: k}
		offers, kick := offers[:0], uint64(0)
		for i := range ms[:n] {
			out, src, q := s.request1(k, &ms[i], &cms[i])
			if q > 0 && s.store != nil && !s.store.covers(q) {
				h.ps = append(h.ps, pending{out: out, src: src})
				h.seq = max(h.seq, q)
				continue
			}
			switch {
			case out != nil && out.kick > 0:
				// An OFFER with a promise: it leaves once the promise
				// is on its way to the disk, below. Promises are made
				// only while the journal is quiet, and a batch holds at
				// most readBatch.
				offers = append(offers, pending{out: out, src: src})
				kick = max(kick, out.kick)
			case out != nil:
				out.released()
				s.send(k, out, src)
			}
		}
		switch {
		case kick == 0 && len(h.ps) == 0:
		case batchedReads && n < readBatch && !s.store.busy.Load() && s.store.quickSyncs():
			// The socket is drained, the journal idle and its syncs
			// quick: write here.
			s.sendAll(k, offers)
			if s.store.wait(max(h.seq, kick)) == nil { // an error is counted and logged by leaseWritten; the clients retry
				s.sendAll(k, h.ps)
			}
		case len(h.ps) == 0:
			// Promises only, one item for the batch: the committer
			// starts the write before the OFFERs leave, so the disk and
			// their round trips overlap. Never wait here for room: with
			// the queue full, the next write takes the promises along,
			// at the latest the one their ACK waits for.
			select {
			case queue <- held{k: k, seq: kick}:
			default:
			}
			s.sendAll(k, offers)
		default:
			s.sendAll(k, offers)
			h.seq = max(h.seq, kick) // the promises ride with the replies held for the disk
			queue <- h
		}
	}
}

// commitLoop sends each batch's held replies once its lease changes are
// on disk. The first wait writes everything changed so far, so the
// batches queued behind it usually find theirs already durable: group
// commit.
func (s *Server) commitLoop(queue <-chan held) {
	for h := range queue {
		if err := s.store.wait(h.seq); err != nil {
			continue // counted and logged by leaseWritten; the clients retry
		}
		s.sendAll(h.k, h.ps)
	}
}

// sendAll sends ps's replies from k (a DECLINE's nil reply is skipped).
func (s *Server) sendAll(k *sock, ps []pending) {
	for _, p := range ps {
		if p.out != nil {
			p.out.released()
			s.send(k, p.out, p.src)
		}
	}
}

// request1 decodes and answers one datagram read by readLoop: the reply
// (nil: none), our address it goes from, and the lease change that must
// be durable first (0: none).
func (s *Server) request1(k *sock, m *ipv4.Message, cm *ipv4.ControlMessage) (*Outgoing, netip.Addr, uint64) {
	buf := m.Buffers[0]
	if m.N >= len(buf) {
		s.Counters.BadPacket.Add(1)
		return nil, netip.Addr{}, 0
	}
	req, err := dhcpv4.FromBytes(buf[:m.N])
	if err != nil {
		s.Counters.BadPacket.Add(1)
		s.Log.Debug().Err(err).Stringer("src", m.Addr).Msg("dhcp: unparsable packet")
		return nil, netip.Addr{}, 0
	}
	in := Incoming{Port: k.role, IfAddr: k.bound}
	if ua, ok := m.Addr.(*net.UDPAddr); ok {
		in.Src = netip.AddrPortFrom(addrOf(ua.IP), uint16(ua.Port))
	}
	if cm.Dst != nil || cm.IfIndex != 0 { // IP_PKTINFO came with it
		in.IfIndex = cm.IfIndex
		in.IfAddr = s.ifAddr(cm.IfIndex, addrOf(cm.Dst), k.bound)
	}
	out, seq := s.handle(req, in, time.Now())
	return out, in.IfAddr, seq
}

// send writes a reply from the socket the request came in on, from our
// address on that interface, broadcasts out of the receiving interface.
func (s *Server) send(k *sock, out *Outgoing, src netip.Addr) {
	var cm *ipv4.ControlMessage
	if out.IfIndex != 0 || isSet(src) {
		cm = &ipv4.ControlMessage{IfIndex: out.IfIndex}
		if isSet(src) && !isSet(k.bound) {
			cm.Src = src.AsSlice()
		}
	}
	err := k.writeNow(out.wire, cm, net.UDPAddrFromAddrPort(out.Dst))
	if err == nil {
		return
	}
	kind := sendFailed(err, &s.Counters.SendDropped, &s.Counters.SendErrors)
	s.logged(kind, func(e *zerolog.Event) {
		e.Err(err).Stringer("dst", out.Dst).Int("ifindex", out.IfIndex).Msg("dhcp: send")
	})
}

// errSendFull: the socket's send buffer had no room for a reply, which was
// dropped rather than waited for (writeNow): the read loop and the commit
// goroutine never stall on the kernel, whose buffer answers to addresses
// that never resolve (forged sources) can fill (docs/security.md).
var errSendFull = errors.New("dhcp: send buffer full")

// sendFailed counts a failed send, as dropped (send buffer full) or as an
// error, and returns its log kind.
func sendFailed(err error, dropped, errs *atomic.Uint64) string {
	if errors.Is(err, errSendFull) {
		dropped.Add(1)
		return "send-full"
	}
	errs.Add(1)
	return "send-error"
}

// logged is logLimited at warn level with the current time, for the
// socket side.
func (s *Server) logged(kind string, log func(*zerolog.Event)) {
	s.mu.Lock()
	ok, n := s.limit.allow(kind, time.Now())
	s.mu.Unlock()
	if ok {
		log(s.Log.Warn().Int("suppressed", n))
	}
}

// ifAddr finds our address on the receiving interface. IP_PKTINFO gives
// the datagram's destination, which for a broadcast DISCOVER is
// 255.255.255.255: then the interface's own addresses decide, preferring
// one inside a configured subnet.
func (s *Server) ifAddr(ifIndex int, dst, bound netip.Addr) netip.Addr {
	if isSet(bound) {
		return bound
	}
	prefixes := s.ifaces.get(ifIndex, time.Now())
	if isSet(dst) && dst.Is4() && !dst.IsMulticast() && dst != broadcast {
		directed := false
		for _, p := range prefixes {
			if p.Bits() <= 30 && dst == addrU32(u32(p.Masked().Addr())|(uint32(1)<<(32-p.Bits())-1)) {
				directed = true
			}
		}
		if !directed {
			return dst
		}
	}
	var first netip.Addr
	for _, p := range prefixes {
		if s.subnetOf(p.Addr()) != nil {
			return p.Addr()
		}
		if !first.IsValid() {
			first = p.Addr()
		}
	}
	return first
}

// ifaceCache maps interface index → IPv4 addresses (IPv6 with v6: for
// DHCPv6), refreshed after ifaceTTL (addresses come and go; a lookup per
// packet would be a netlink dump per packet).
type ifaceCache struct {
	v6 bool
	mu sync.Mutex
	m  map[int]ifaceEntry
}

type ifaceEntry struct {
	prefixes []netip.Prefix
	at       time.Time
}

func (c *ifaceCache) get(idx int, now time.Time) []netip.Prefix {
	if idx <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[idx]; ok && now.Sub(e.at) < ifaceTTL {
		return e.prefixes
	}
	var ps []netip.Prefix
	if ifi, err := net.InterfaceByIndex(idx); err == nil {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ip := addrOf(n.IP)
				if c.v6 {
					ip, _ = netip.AddrFromSlice(n.IP)
				}
				if isSet(ip) && (n.IP.To4() == nil) == c.v6 {
					ones, bits := n.Mask.Size()
					if bits == 128 && !c.v6 { // IPv4 in a 16-byte mask
						ones -= 96
					}
					ps = append(ps, netip.PrefixFrom(ip, ones))
				}
			}
		}
	}
	if c.m == nil {
		c.m = make(map[int]ifaceEntry)
	}
	c.m[idx] = ifaceEntry{prefixes: ps, at: now}
	return ps
}
