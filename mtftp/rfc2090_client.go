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
	r.Size.Store(-1)
	r.Held.Store(0)
	var res ReceiveResult
	start := time.Now()
	srv, err := resolvePort(server, "69")
	if err != nil {
		return res, err
	}
	blk := r.BlockSize
	if blk == 0 {
		blk = DefaultRFC2090BlockSize
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ackEvery := r.AckTimeout
	if ackEvery <= 0 {
		ackEvery = time.Second
	}
	s, local, join, err := openSockets(r.dial, r.join, r.Interface, r.LocalAddr, srv)
	if err != nil {
		return res, err
	}
	defer s.close()

	req := (&tftp.Request{Op: tftp.OpRRQ, Filename: remote, Mode: "octet", Options: []tftp.Option{
		{Name: OptMulticast}, {Name: tftp.OptBlockSize, Value: strconv.Itoa(blk)}, {Name: tftp.OptTransferSz, Value: "0"},
	}}).Marshal(nil)
	f := &blockFile{out: out, blksize: tftp.DefaultBlockSize, res: &res, prog: &r.Held}
	var (
		tid       netip.AddrPort // the server's transfer socket, from the first OACK
		master    bool
		heard     = time.Now()
		lastAck   time.Time
		ackedLast bool
	)
	ack := func() {
		n := f.first() - 1
		if f.complete() {
			n = f.last
		} else if n+1 < f.maxSeen {
			res.Requests++ // a block it saw go by without it
		}
		sendAck(s.uc, n, tid, &res)
		lastAck = time.Now()
	}
	s.uc.WriteTo(req, srv)
	for {
		if f.complete() {
			res.Duration = time.Since(start)
			if !ackedLast {
				// The final ACK, twice: a passive client's single ACK
				// lost would cost the server a promotion round later.
				ack()
				ack()
			}
			if master {
				r.linger(ctx, s, f, tid, &res)
			}
			return res, f.finish()
		}
		if time.Since(heard) > timeout {
			return res, fmt.Errorf("mtftp: %s: %w from %v in %v (%d blocks held)", remote, tftp.ErrNoAnswer, srv, timeout, f.held)
		}
		wait := ackEvery
		if !tid.IsValid() {
			wait = time.Second // the request's retry
		}
		p, ok, err := s.next(ctx, wait)
		if err != nil {
			return res, err
		}
		if !ok {
			res.Timeouts++
			switch {
			case !tid.IsValid():
				s.uc.WriteTo(req, srv)
			case master && time.Since(lastAck) >= ackEvery:
				ack()
			}
			continue
		}
		if p.from.Addr() != srv.Addr() || (tid.IsValid() && p.from != tid) {
			continue // only the server's transfer socket counts
		}
		switch tftp.PacketOpcode(p.b) {
		case tftp.OpOACK:
			heard = time.Now()
			opts, err := tftp.ParseOACK(p.b)
			if err != nil {
				return res, fmt.Errorf("mtftp: bad OACK: %w", err)
			}
			group, mc, size, blksize, err := parseMulticastOACK(opts)
			if err != nil {
				s.uc.WriteTo(tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "multicast only"), p.from)
				return res, err
			}
			if !tid.IsValid() {
				tid = p.from
				if blksize > 0 {
					f.blksize = blksize
				}
				if size >= 0 {
					r.Size.Store(size)
				}
			}
			if group.IsValid() {
				if err := s.joinGroup(join, group, local); err != nil {
					return res, err
				}
			}
			if mc && !master {
				res.Masters++
			}
			master = mc
			if master {
				ack()
			}
		case tftp.OpDATA:
			if !tid.IsValid() {
				// Plain TFTP: the server serves this request by unicast.
				s.uc.WriteTo(tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "multicast only"), p.from)
				return res, ErrMulticastRefused
			}
			heard = time.Now()
			n, payload, err := tftp.ParseData(p.b)
			if err != nil {
				continue
			}
			if _, err := f.put(n, payload); err != nil {
				return res, err
			}
			if master && !f.complete() {
				ack()
			}
		case tftp.OpERROR:
			code, msg, _ := tftp.ParseError(p.b)
			return res, &tftp.RemoteError{Code: code, Message: msg}
		}
	}
}

// linger stays a moment after a master's final ACK: if it was lost, the
// server sends the last block again, and gets the ACK again.
func (r *RFC2090Receiver) linger(ctx context.Context, s *sockets, f *blockFile, tid netip.AddrPort, res *ReceiveResult) {
	for range 3 {
		p, ok, err := s.next(ctx, 500*time.Millisecond)
		if err != nil || !ok {
			return
		}
		if p.from == tid && tftp.PacketOpcode(p.b) == tftp.OpDATA {
			if n, _, err := tftp.ParseData(p.b); err == nil && int(n) == f.last {
				res.Duplicates++
				sendAck(s.uc, f.last, tid, res)
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
