package mtftp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/tftp"
)

// Defaults of PXEReceiver: the TMOUT and DELAY mtftpd's DHCP server
// announces (option 43.4/43.5) and atftp's --mtftp listen-delay and
// timeout-delay examples use.
const (
	DefaultPXEListenDelay = 2 * time.Second
	DefaultPXEDelay       = 2 * time.Second
	DefaultPXEOpens       = 16
	// pxeAckTries: DELAYs without a block before the acknowledging client
	// gives the pass up (and re-listens, then re-opens).
	pxeAckTries = 5
)

// PXEReceiver downloads a file by PXE MTFTP (docs/protocols.md §7.3), as a PXE
// ROM does: LISTEN on the file's group for a pass under way, collecting
// blocks into a bitmap; OPEN with a plain RRQ when it hears nothing; if
// the server makes it the acknowledging client (DATA 1 by unicast),
// RECEIVE: ACK every block, also one it already holds, until the short
// block; re-listen and re-open while gaps remain, keeping what it holds.
type PXEReceiver struct {
	// Group is where the file's DATA is multicast (DHCP option
	// 43.1/43.2); zero = iPXE's 239.255.1.1:3001.
	Group netip.AddrPort
	// ListenDelay (TMOUT, option 43.4) is how long it listens before
	// opening; Delay (DELAY, 43.5) the wait for each packet. Zero = 2 s.
	ListenDelay, Delay time.Duration
	// Opens bounds the RRQs it sends; 0 = DefaultPXEOpens.
	Opens     int
	Interface string
	Log       zerolog.Logger
	// LocalAddr is the address requests and ACKs leave from; zero = the
	// one the route to the server uses.
	LocalAddr netip.Addr

	Held atomic.Int64 // bytes held so far
	Size atomic.Int64 // the file size once the short block is seen (-1 before)

	dial dialFunc // tests replace them
	join joinFunc
}

// Get downloads remote from server (HOST[:PORT], port 1759 by default,
// iPXE's MTFTP port) into out, which it writes at block offsets and cuts
// to the file's size.
func (r *PXEReceiver) Get(ctx context.Context, server, remote string, out *os.File) (ReceiveResult, error) {
	r.Size.Store(-1)
	r.Held.Store(0)
	var res ReceiveResult
	start := time.Now()
	srv, err := resolvePort(server, "1759")
	if err != nil {
		return res, err
	}
	group := r.Group
	if !group.IsValid() {
		group = netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort)
	}
	listen, delay, opens := r.ListenDelay, r.Delay, r.Opens
	if listen <= 0 {
		listen = DefaultPXEListenDelay
	}
	if delay <= 0 {
		delay = DefaultPXEDelay
	}
	if opens <= 0 {
		opens = DefaultPXEOpens
	}
	s, local, join, err := openSockets(r.dial, r.join, r.Interface, r.LocalAddr, srv)
	if err != nil {
		return res, err
	}
	defer s.close()
	if err := s.joinGroup(join, group, local); err != nil {
		return res, err
	}
	f := &blockFile{out: out, blksize: PXEBlockSize, res: &res, prog: &r.Held}
	rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: remote, Mode: "octet"}).Marshal(nil)

	// take handles a datagram: a DATA block from the server's port is
	// kept (n = its number, 0 if none); an ERROR to this client ends the
	// download.
	take := func(p rxPkt) (n uint16, err error) {
		if p.from != srv {
			return 0, nil // PXE MTFTP sends everything from SPORT (docs/protocols.md §7.2)
		}
		switch tftp.PacketOpcode(p.b) {
		case tftp.OpDATA:
			nb, payload, err := tftp.ParseData(p.b)
			if err != nil {
				return 0, nil
			}
			if _, err := f.put(nb, payload); err != nil {
				return 0, err
			}
			if f.last != 0 {
				r.Size.Store(f.size)
			}
			return nb, nil
		case tftp.OpERROR:
			if !p.group {
				code, msg, _ := tftp.ParseError(p.b)
				return 0, &tftp.RemoteError{Code: code, Message: msg}
			}
		}
		return 0, nil
	}
	done := func() (ReceiveResult, error) {
		res.Duration = time.Since(start)
		return res, f.finish()
	}

	passing := false // another client's pass is under way
	for round := 0; ; round++ {
		// LISTEN: TMOUT for a first packet, then DELAY between packets,
		// collecting a pass under way. After a pass with gaps, the wait
		// before opening shrinks with what is missing, so the neediest
		// client opens first.
		wait := listen
		switch {
		case passing:
			wait = delay
		case round > 0:
			wait = max(0, listen-time.Duration(f.missing())*time.Second)
		}
		passing = false
		for wait > 0 {
			p, ok, err := s.next(ctx, wait)
			if err != nil {
				return res, err
			}
			if !ok {
				break
			}
			if n, err := take(p); err != nil {
				return res, err
			} else if n > 0 {
				wait = delay
			}
			if f.complete() {
				return done()
			}
		}
		if res.Requests >= int64(opens) {
			return res, fmt.Errorf("mtftp: %s: %w: %d opens, %d of %d blocks held", remote, tftp.ErrNoAnswer, res.Requests, f.held, max(f.last, f.maxSeen))
		}
		// OPEN.
		res.Requests++
		s.uc.WriteTo(rrq, srv)
		acking := false
		deadline := time.Now().Add(delay)
		for !acking && !passing {
			p, ok, err := s.next(ctx, time.Until(deadline))
			if err != nil {
				return res, err
			}
			if !ok {
				break
			}
			n, err := take(p)
			if err != nil {
				return res, err
			}
			switch {
			case n == 1 && !p.group:
				acking = true // the unicast copy: this client acknowledges
			case n > 1:
				passing = true // another client's pass: listen to it
			}
			if f.complete() {
				return done()
			}
		}
		if !acking {
			if !passing {
				res.Timeouts++
			}
			continue
		}
		// RECEIVE: lock-step, every block ACKed, also one already held
		// (a repeat means the ACK was lost), until the short block.
		res.Masters++
		cur := 1
		sendAck(s.uc, cur, srv, &res)
		for tries := 0; tries < pxeAckTries && (f.last == 0 || cur != f.last); {
			p, ok, err := s.next(ctx, delay)
			if err != nil {
				return res, err
			}
			if !ok {
				tries++
				res.Timeouts++
				sendAck(s.uc, cur, srv, &res)
				continue
			}
			n, err := take(p)
			if err != nil {
				return res, err
			}
			if n > 0 {
				cur, tries = int(n), 0
				sendAck(s.uc, cur, srv, &res)
			}
		}
		if f.complete() {
			return done()
		}
	}
}
