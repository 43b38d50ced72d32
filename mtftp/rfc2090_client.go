package mtftp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/tftp"
)

// DefaultRFC2090BlockSize is what RFC2090Receiver asks for: atftp's and
// the lab tests' 1428 (iPXE asks 1432), below every server's cap.
const DefaultRFC2090BlockSize = 1428

// RFC2090Receiver downloads a file with the RFC 2090 `multicast` option
// (docs/protocols.md §6.2): an RRQ with multicast, blksize and tsize to the
// server's TFTP port; it joins the group the OACK names and takes every
// block that passes. While the server makes it master (OACK mc=1) it ACKs
// the highest block it holds in order after every block and on its own
// timer, which asks for its first gap; passive, it only listens. It ends
// with an ACK of the last block, master or not.
type RFC2090Receiver struct {
	// BlockSize is the blksize asked for; 0 = DefaultRFC2090BlockSize.
	BlockSize int
	// Interface is where the group is joined; "" = the interface of the
	// address the server is reached from.
	Interface string
	// Timeout is the silence from the server tolerated before giving up;
	// 0 = 10 s.
	Timeout time.Duration
	// AckTimeout is how long a master waits for the next block before it
	// ACKs again; 0 = 1 s.
	AckTimeout time.Duration
	Log        zerolog.Logger
	// LocalAddr is the address requests and ACKs leave from; zero = the
	// one the route to the server uses. (Servers cap transfers per
	// client address: mtftpd's tftp.max_per_client.)
	LocalAddr netip.Addr

	// Progress: bytes held so far and the file size once known (-1
	// before); read them at any time.
	Held atomic.Int64
	Size atomic.Int64

	dial dialFunc // tests replace them
	join joinFunc
}

// Get downloads remote from server (HOST[:PORT], port 69 by default) into
// out, which it writes at block offsets and cuts to the file's size.
func (r *RFC2090Receiver) Get(ctx context.Context, server, remote string, out *os.File) (ReceiveResult, error) {
	blk := r.BlockSize
	if blk == 0 {
		blk = DefaultRFC2090BlockSize
	}
	g := &rfc2090Get{
		mcastGet: newGet(out, tftp.DefaultBlockSize, &r.Held, &r.Size),
		remote:   remote,
		timeout:  positiveOr(r.Timeout, 10*time.Second),
		ackEvery: positiveOr(r.AckTimeout, time.Second),
		req: (&tftp.Request{Op: tftp.OpRRQ, Filename: remote, Mode: "octet", Options: []tftp.Option{
			{Name: OptMulticast}, {Name: tftp.OptBlockSize, Value: strconv.Itoa(blk)}, {Name: tftp.OptTransferSz, Value: "0"},
		}}).Marshal(nil),
	}
	if err := g.connect(r.dial, r.join, r.Interface, r.LocalAddr, server, "69"); err != nil {
		return g.res, err
	}
	defer g.s.close()
	g.heard = time.Now()
	g.s.uc.WriteTo(g.req, g.srv)
	return g.run(ctx)
}

// rfc2090Get is one RFC 2090 download under way.
type rfc2090Get struct {
	*mcastGet
	remote            string
	req               []byte
	timeout, ackEvery time.Duration
	tid               netip.AddrPort // the server's transfer socket, from the first OACK
	master            bool
	heard, lastAck    time.Time
}

// run takes the server's packets until the file is complete, the server
// is silent for the timeout, or an error.
func (g *rfc2090Get) run(ctx context.Context) (ReceiveResult, error) {
	for {
		if g.f.complete() {
			return g.end(ctx)
		}
		if time.Since(g.heard) > g.timeout {
			return g.res, fmt.Errorf("mtftp: %s: %w from %v in %v (%d blocks held)", g.remote, tftp.ErrNoAnswer, g.srv, g.timeout, g.f.held)
		}
		wait := g.ackEvery
		if !g.tid.IsValid() {
			wait = time.Second // the request's retry
		}
		p, ok, err := g.s.next(ctx, wait)
		if err != nil {
			return g.res, err
		}
		if !ok {
			g.tick()
			continue
		}
		if p.from.Addr() != g.srv.Addr() || (g.tid.IsValid() && p.from != g.tid) {
			continue // only the server's transfer socket counts
		}
		switch tftp.PacketOpcode(p.b) {
		case tftp.OpOACK:
			err = g.oack(p)
		case tftp.OpDATA:
			err = g.takeData(p)
		case tftp.OpERROR:
			err = remoteError(p.b)
		}
		if err != nil {
			return g.res, err
		}
	}
}

// end finishes a complete download. The final ACK goes out twice: a
// passive client's single ACK lost would cost the server a promotion
// round later; a master lingers for a repeat of the last block.
func (g *rfc2090Get) end(ctx context.Context) (ReceiveResult, error) {
	g.stopClock()
	g.ack()
	g.ack()
	if g.master {
		g.linger(ctx)
	}
	return g.finish()
}

// tick is the receiver's own timer: the request again until the server
// answers; as master, the ACK again when none went out for ackEvery.
func (g *rfc2090Get) tick() {
	g.res.Timeouts++
	switch {
	case !g.tid.IsValid():
		g.s.uc.WriteTo(g.req, g.srv)
	case g.master && time.Since(g.lastAck) >= g.ackEvery:
		g.ack()
	}
}

// ack ACKs the highest block held in order (the last block once complete).
func (g *rfc2090Get) ack() {
	n := g.f.first() - 1
	if g.f.complete() {
		n = g.f.last
	} else if n+1 < g.f.maxSeen {
		g.res.Requests++ // a block it saw go by without it
	}
	sendAck(g.s.uc, n, g.tid, &g.res)
	g.lastAck = time.Now()
}

// oack takes an OACK: the first names the transfer socket, block size and
// size; any may name the group to join and make this client master (mc=1)
// or passive.
func (g *rfc2090Get) oack(p rxPkt) error {
	g.heard = time.Now()
	opts, err := tftp.ParseOACK(p.b)
	if err != nil {
		return fmt.Errorf("mtftp: bad OACK: %w", err)
	}
	group, mc, size, blksize, err := parseMulticastOACK(opts)
	if err != nil {
		g.s.uc.WriteTo(tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "multicast only"), p.from)
		return err
	}
	if !g.tid.IsValid() {
		g.tid = p.from
		if blksize > 0 {
			g.f.blksize = blksize
		}
		if size >= 0 {
			g.size.Store(size)
		}
	}
	if group.IsValid() {
		if err := g.s.joinGroup(g.join, group, g.local); err != nil {
			return err
		}
	}
	if mc && !g.master {
		g.res.Masters++
	}
	g.master = mc
	if g.master {
		g.ack()
	}
	return nil
}

// takeData keeps a DATA block; a master ACKs after each. DATA before any
// OACK is plain TFTP: the server serves the request by unicast.
func (g *rfc2090Get) takeData(p rxPkt) error {
	if !g.tid.IsValid() {
		g.s.uc.WriteTo(tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "multicast only"), p.from)
		return ErrMulticastRefused
	}
	g.heard = time.Now()
	if _, ok, err := g.data(p.b); !ok || err != nil {
		return err
	}
	if g.master && !g.f.complete() {
		g.ack()
	}
	return nil
}

// linger stays a moment after a master's final ACK: if it was lost, the
// server sends the last block again, and gets the ACK again.
func (g *rfc2090Get) linger(ctx context.Context) {
	for range 3 {
		p, ok, err := g.s.next(ctx, 500*time.Millisecond)
		if err != nil || !ok {
			return
		}
		if p.from == g.tid && tftp.PacketOpcode(p.b) == tftp.OpDATA {
			if n, _, err := tftp.ParseData(p.b); err == nil && int(n) == g.f.last {
				g.res.Duplicates++
				sendAck(g.s.uc, g.f.last, g.tid, &g.res)
			}
		}
	}
}

// parseMulticastOACK reads an RFC 2090 OACK: the group (invalid when a
// later OACK leaves it out, ",,1"), whether this client is master, and
// tsize and blksize (-1 and 0 when absent).
func parseMulticastOACK(opts []tftp.Option) (group netip.AddrPort, master bool, size int64, blksize int, err error) {
	size = -1
	found := false
	for _, o := range opts {
		switch strings.ToLower(o.Name) {
		case OptMulticast:
			found = true
			f := strings.Split(o.Value, ",")
			if len(f) != 3 || (f[2] != "0" && f[2] != "1") {
				return group, false, size, 0, fmt.Errorf("mtftp: OACK multicast %q is not addr,port,0|1", o.Value)
			}
			master = f[2] == "1"
			if f[0] != "" || f[1] != "" {
				a, err1 := netip.ParseAddr(f[0])
				port, err2 := strconv.ParseUint(f[1], 10, 16)
				if err1 != nil || err2 != nil || !a.Is4() || !a.IsMulticast() || port == 0 {
					return group, false, size, 0, fmt.Errorf("mtftp: OACK multicast %q: bad group", o.Value)
				}
				group = netip.AddrPortFrom(a, uint16(port))
			}
		case tftp.OptTransferSz:
			v, err := strconv.ParseInt(o.Value, 10, 64)
			if err != nil || v < 0 {
				return group, false, -1, 0, fmt.Errorf("mtftp: OACK tsize %q", o.Value)
			}
			size = v
		case tftp.OptBlockSize:
			v, err := strconv.Atoi(o.Value)
			if err != nil || v < tftp.MinBlockSize || v > tftp.MaxBlockSize {
				return group, false, size, 0, fmt.Errorf("mtftp: OACK blksize %q", o.Value)
			}
			blksize = v
		}
	}
	if !found {
		return group, false, size, 0, ErrMulticastRefused
	}
	return group, master, size, blksize, nil
}
