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
	g := &pxeGet{
		mcastGet: newGet(out, PXEBlockSize, &r.Held, &r.Size),
		remote:   remote,
		listen:   positiveOr(r.ListenDelay, DefaultPXEListenDelay),
		delay:    positiveOr(r.Delay, DefaultPXEDelay),
		opens:    positiveOr(r.Opens, DefaultPXEOpens),
		rrq:      (&tftp.Request{Op: tftp.OpRRQ, Filename: remote, Mode: "octet"}).Marshal(nil),
	}
	if err := g.connect(r.dial, r.join, r.Interface, r.LocalAddr, server, "1759"); err != nil {
		return g.res, err
	}
	defer g.s.close()
	group := r.Group
	if !group.IsValid() {
		group = netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort)
	}
	if err := g.s.joinGroup(g.join, group, g.local); err != nil {
		return g.res, err
	}
	return g.run(ctx)
}

// pxeGet is one PXE MTFTP download under way.
type pxeGet struct {
	*mcastGet
	remote        string
	rrq           []byte
	listen, delay time.Duration
	opens         int
}

// run repeats LISTEN, OPEN and, when this client acknowledges, RECEIVE
// until the file is complete or the opens are spent.
func (g *pxeGet) run(ctx context.Context) (ReceiveResult, error) {
	passing := false // another client's pass is under way
	for round := 0; ; round++ {
		// After a pass with gaps, the wait before opening shrinks with
		// what is missing, so the neediest client opens first.
		wait := g.listen
		switch {
		case passing:
			wait = g.delay
		case round > 0:
			wait = max(0, g.listen-time.Duration(g.f.missing())*time.Second)
		}
		acking, err := g.listenFor(ctx, wait)
		if err != nil || g.f.complete() {
			return g.end(err)
		}
		if !acking {
			if g.res.Requests >= int64(g.opens) {
				return g.res, fmt.Errorf("mtftp: %s: %w: %d opens, %d of %d blocks held", g.remote, tftp.ErrNoAnswer, g.res.Requests, g.f.held, max(g.f.last, g.f.maxSeen))
			}
			acking, passing, err = g.open(ctx)
			if err != nil || g.f.complete() {
				return g.end(err)
			}
		}
		if !acking {
			if !passing {
				g.res.Timeouts++
			}
			continue
		}
		passing = false
		if err := g.receive(ctx); err != nil || g.f.complete() {
			return g.end(err)
		}
	}
}

// end returns err, or the finished download when err is nil.
func (g *pxeGet) end(err error) (ReceiveResult, error) {
	if err != nil {
		return g.res, err
	}
	g.stopClock()
	return g.finish()
}

// take handles a datagram: a DATA block from the server's port is kept
// (n = its number, 0 if none); an ERROR to this client ends the download.
func (g *pxeGet) take(p rxPkt) (n uint16, err error) {
	if p.from != g.srv {
		return 0, nil // PXE MTFTP sends everything from SPORT (docs/protocols.md §7.2)
	}
	switch tftp.PacketOpcode(p.b) {
	case tftp.OpDATA:
		n, _, err := g.data(p.b)
		if err != nil {
			return 0, err
		}
		return n, nil
	case tftp.OpERROR:
		if !p.group {
			return 0, remoteError(p.b)
		}
	}
	return 0, nil
}

// listenFor is LISTEN: wait for a first packet, then DELAY between
// packets, collecting a pass under way, until silence or the file is
// complete. A DATA 1 by unicast ends it with acking: the server answered
// one of this client's RRQs after its DELAY (the first copy lost, or
// queued behind group DATA the open took for another pass) or handed it
// a pass (docs/protocols.md §7.4, rule 5), and it only sends that to the
// acknowledging client, whose ACKs it now waits for.
func (g *pxeGet) listenFor(ctx context.Context, wait time.Duration) (acking bool, err error) {
	for wait > 0 {
		p, ok, err := g.s.next(ctx, wait)
		if err != nil || !ok {
			return false, err
		}
		n, err := g.take(p)
		if err != nil || g.f.complete() {
			return false, err
		}
		if n == 1 && !p.group && g.res.Requests > 0 {
			return true, nil
		}
		if n > 0 {
			wait = g.delay
		}
	}
	return false, nil
}

// open is OPEN: a plain RRQ, then DELAY for the answer. acking: the
// server sent this client DATA 1 by unicast, it acknowledges the pass;
// passing: another client's pass goes by.
func (g *pxeGet) open(ctx context.Context) (acking, passing bool, err error) {
	g.res.Requests++
	g.s.uc.WriteTo(g.rrq, g.srv)
	deadline := time.Now().Add(g.delay)
	for !acking && !passing {
		p, ok, err := g.s.next(ctx, time.Until(deadline))
		if err != nil || !ok {
			return false, passing, err
		}
		n, err := g.take(p)
		if err != nil {
			return false, passing, err
		}
		switch {
		case n == 1 && !p.group:
			acking = true // the unicast copy: this client acknowledges
		case n > 1:
			passing = true // another client's pass: listen to it
		}
		if g.f.complete() {
			return acking, passing, nil
		}
	}
	return acking, passing, nil
}

// receive is RECEIVE: lock-step, every block ACKed, also one already held
// (a repeat means the ACK was lost), until the short block or pxeAckTries
// DELAYs without one.
func (g *pxeGet) receive(ctx context.Context) error {
	g.res.Masters++
	cur := 1
	sendAck(g.s.uc, cur, g.srv, &g.res)
	for tries := 0; tries < pxeAckTries && (g.f.last == 0 || cur != g.f.last); {
		p, ok, err := g.s.next(ctx, g.delay)
		if err != nil {
			return err
		}
		if !ok {
			tries++
			g.res.Timeouts++
			sendAck(g.s.uc, cur, g.srv, &g.res)
			continue
		}
		n, err := g.take(p)
		if err != nil {
			return err
		}
		if n > 0 {
			cur, tries = int(n), 0
			sendAck(g.s.uc, cur, g.srv, &g.res)
		}
	}
	return nil
}
