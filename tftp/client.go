package tftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// Client downloads files with the same engine rules the server follows:
// options, windows, rollover, adaptive retransmission. The zero value asks
// for no options (plain RFC 1350).
type Client struct {
	BlockSize  int    // 0: do not ask (512)
	WindowSize int    // 0: do not ask (1)
	TSize      bool   // ask the server for the size (Progress gets a total)
	Mode       string // "octet" (default) or "netascii"
	// Timeout is the first retransmission timeout; 0 = 1 s. It adapts to
	// measured round trips like the server's.
	Timeout time.Duration
	Retries int // consecutive timeouts before giving up; 0 = DefaultRetries
	// Progress, if set, is called after each in-order block with the bytes
	// received so far and the announced size (-1 when unknown).
	Progress func(received, total int64)
	// WriteBuffer is how many bytes are gathered before they are written
	// to the destination; 0 = 1 MiB. A small one (one block) lets a
	// reader of the stream stop the transfer early without the client
	// having fetched a megabyte ahead.
	WriteBuffer int
	// LocalAddr, if valid, is the address the client's socket binds to
	// (an ephemeral port on it): load tests spread clients over many
	// source addresses. Zero: the kernel picks.
	LocalAddr netip.Addr
}

// ErrNoAnswer is wrapped by the error of a request or transfer dropped
// after Retries consecutive timeouts.
var ErrNoAnswer = errors.New("no answer")

// GetResult describes a finished download.
type GetResult struct {
	Bytes      int64
	Blocks     uint64
	BlockSize  int
	WindowSize int
	TSize      int64 // announced by the server, -1 if none
	Timeouts   int
	// Duplicates counts DATA blocks received again (already held: the
	// server retransmitted, or the network duplicated); OutOfOrder counts
	// DATA blocks that arrived ahead of a gap (lost or reordered blocks).
	Duplicates int
	OutOfOrder int
	Duration   time.Duration
	ServerAddr netip.AddrPort // the server's transfer TID
	Negotiated []Option
}

// Get downloads remote from server ("host:port", port 69 when omitted)
// into w. It returns a *RemoteError when the server refuses.
func (c *Client) Get(ctx context.Context, server, remote string, w io.Writer) (GetResult, error) {
	res := GetResult{TSize: -1, BlockSize: DefaultBlockSize, WindowSize: 1}
	start := time.Now()
	srv, err := resolveServer(server)
	if err != nil {
		return res, err
	}
	c2, err := c.open(srv.Addr())
	if err != nil {
		return res, err
	}
	defer c2.Close()
	return c.get(ctx, udpConn{c2}, srv, remote, w, start)
}

// open opens the client's socket (on LocalAddr, if set) of the server
// address's family.
func (c *Client) open(server netip.Addr) (*udpio.Conn, error) {
	laddr := &net.UDPAddr{}
	network := "udp4"
	if server.Is6() && !server.Is4In6() {
		network = "udp6"
	}
	if c.LocalAddr.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.LocalAddr.Unmap(), 0))
	}
	uc, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	// Large windows of large blocks arrive faster than one read per
	// datagram drains them (docs/lab-notes.md, "UDP receive buffers"): a
	// big buffer, recvmmsg, and UDP GRO where the kernel has it.
	c2, err := udpio.New(uc, udpio.Options{RcvBuf: 8 << 20, SndBuf: 256 << 10})
	if err != nil {
		uc.Close()
		return nil, err
	}
	c2.EnableGRO()
	return c2, nil
}

// ProbeSize asks for remote with the client's options plus tsize and
// aborts after the server's answer, the way UEFI PXE firmware learns a
// file's size before the real download (docs/lab-notes.md, "What the
// clients send": OVMF sends RRQ tsize=0 blksize=1468 windowsize=4, then
// ERROR 8 right after the OACK).
// It returns the announced size, or -1 when the server answered with DATA
// (no option support) or left tsize out of its OACK.
func (c *Client) ProbeSize(ctx context.Context, server, remote string) (int64, error) {
	srv, err := resolveServer(server)
	if err != nil {
		return -1, err
	}
	uc, err := c.open(srv.Addr())
	if err != nil {
		return -1, err
	}
	defer uc.Close()
	return c.probe(ctx, udpConn{uc}, srv, remote)
}

// probe runs ProbeSize over uc, which the caller owns.
func (c *Client) probe(ctx context.Context, uc conn, srv netip.AddrPort, remote string) (int64, error) {
	withSize := *c
	withSize.TSize = true
	req := withSize.request(remote)
	rrq := req.Marshal(nil)
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	retries := c.Retries
	if retries <= 0 {
		retries = DefaultRetries
	}
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, MaxBlockSize+HeaderLen+1)
	for try := 0; try <= retries; try++ {
		if err := uc.WriteTo(rrq, srv); err != nil {
			return -1, err
		}
		uc.SetReadDeadline(time.Now().Add(timeout))
		for {
			n, from, err := uc.ReadFrom(buf)
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			if err != nil {
				if !isTimeout(err) {
					return -1, err
				}
				break // resend the request
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if from.Addr() != srv.Addr() {
				continue // not our server
			}
			pkt := buf[:n]
			abort := func() { uc.WriteTo(AppendError(nil, ErrCodeOptionRefuse, "User aborted the transfer"), from) }
			switch PacketOpcode(pkt) {
			case OpOACK:
				abort()
				opts, err := ParseOACK(pkt)
				if err != nil {
					return -1, err
				}
				for _, o := range opts {
					if strings.EqualFold(o.Name, OptTransferSz) {
						if v, err := strconv.ParseInt(o.Value, 10, 64); err == nil && v >= 0 {
							return v, nil
						}
						return -1, fmt.Errorf("tftp: server answered tsize %q", o.Value)
					}
				}
				return -1, nil
			case OpDATA:
				abort()
				return -1, nil
			case OpERROR:
				code, msg, _ := ParseError(pkt)
				return -1, &RemoteError{Code: code, Message: msg}
			}
		}
	}
	return -1, fmt.Errorf("tftp: %s: size probe: %w from %s after %d retries", remote, ErrNoAnswer, srv, retries)
}

// request builds the RRQ for remote with the client's options.
func (c *Client) request(remote string) Request {
	mode := c.Mode
	if mode == "" {
		mode = "octet"
	}
	req := Request{Op: OpRRQ, Filename: remote, Mode: mode}
	if c.BlockSize > 0 {
		req.Options = append(req.Options, Option{OptBlockSize, strconv.Itoa(c.BlockSize)})
	}
	if c.WindowSize > 0 {
		req.Options = append(req.Options, Option{OptWindowSize, strconv.Itoa(c.WindowSize)})
	}
	if c.TSize {
		req.Options = append(req.Options, Option{OptTransferSz, "0"})
	}
	return req
}

// get runs a download over uc, which the caller owns.
func (c *Client) get(ctx context.Context, uc conn, srv netip.AddrPort, remote string, w io.Writer, start time.Time) (GetResult, error) {
	d := c.newDownload(uc, srv, remote, w, start)
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := d.send(d.last, srv); err != nil {
		return d.res, err
	}
	err := d.run(ctx)
	return d.res, err
}

// download is one Client.get in progress. The receive state (receiver)
// decides what each DATA block means; the steps around it are methods:
// run waits for packets and timers, process routes a packet to onOACK or
// onData, deliver writes the blocks in order, onTimeout answers silence.
type download struct {
	c       *Client
	uc      conn
	srv     netip.AddrPort // where the request goes
	remote  string
	start   time.Time
	retries int
	est     rto.Estimator
	res     GetResult
	rx      receiver
	bw      *bufio.Writer
	out     io.Writer      // bw, or a netascii decoder in front of it
	peer    netip.AddrPort // the server's TID, learned from its first reply
	last    []byte         // the last packet sent, for retransmission: the RRQ until the server answers
	abuf    []byte
	sentAt  time.Time
	// timeouts counts consecutive timeouts; sampled: a round trip was
	// measured (once, and never on a resent packet: Karn).
	timeouts int
	sampled  bool
}

func (c *Client) newDownload(uc conn, srv netip.AddrPort, remote string, w io.Writer, start time.Time) *download {
	req := c.request(remote)
	d := &download{c: c, uc: uc, srv: srv, remote: remote, start: start, retries: c.Retries,
		res:  GetResult{TSize: -1, BlockSize: DefaultBlockSize, WindowSize: 1},
		rx:   receiver{size: 1, blksize: DefaultBlockSize},
		last: req.Marshal(nil)}
	if d.retries <= 0 {
		d.retries = DefaultRetries
	}
	initial := c.Timeout
	if initial <= 0 {
		initial = time.Second
	}
	d.est = rto.New(initial, 20*time.Millisecond, 10*time.Second)
	// One write per block would cost a syscall per 1468 bytes: buffer,
	// and flush before the final ACK reports success. WriteBuffer lets a
	// caller that reads only a prefix (an image's index) see each block
	// as it comes.
	d.bw = bufio.NewWriterSize(w, c.writeBuffer())
	d.out = d.bw
	if req.Mode == "netascii" {
		d.out = &netasciiDecoder{w: d.bw}
	}
	return d
}

// run waits for the server's packets and the timers until the transfer
// ends: the retransmission timer (onTimeout), and the reorder hold of an
// open gap, which when it runs out is reported (RFC 7440; docs/protocols.md
// §3.4 rule 2) with an ACK of the last block held in order.
func (d *download) run(ctx context.Context) error {
	rd := newPacketReader(d.uc)
	for {
		hold := reorderHold(d.est.RTO())
		if d.rx.gapReport(time.Now(), hold) {
			if err := d.ack(); err != nil {
				return err
			}
		}
		deadline := d.sentAt.Add(d.est.RTO())
		if due := d.rx.gapDue(hold); !due.IsZero() && due.Before(deadline) {
			d.uc.SetReadDeadline(due)
		} else {
			d.uc.SetReadDeadline(deadline)
		}
		if err := ctx.Err(); err != nil {
			if d.peer.IsValid() {
				d.uc.WriteTo(AppendError(nil, ErrCodeUndefined, "cancelled"), d.peer)
			}
			return err
		}
		pkts, err := rd.read()
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if !isTimeout(err) {
				return err
			}
			if time.Now().Before(deadline) {
				continue // the gap's hold ran out, or woken early
			}
			if err := d.onTimeout(); err != nil {
				return err
			}
			continue
		}
		for _, p := range pkts {
			done, err := d.process(p.Data, p.Src)
			if err != nil || done {
				return err
			}
		}
	}
}

// onTimeout answers the retransmission timer: give up after retries, else
// repeat the request, or tell the server where we are.
func (d *download) onTimeout() error {
	d.res.Timeouts++
	if d.timeouts++; d.timeouts > d.retries {
		return fmt.Errorf("tftp: %s: %w from %s after %d retries", d.remote, ErrNoAnswer, d.srv, d.retries)
	}
	d.est.Timeout()
	if d.peer.IsValid() && (d.rx.have > 0 || d.res.Negotiated != nil) {
		// An ACK of the last block held in order is news if our last
		// ACK was lost.
		return d.ack()
	}
	to := d.peer
	if !to.IsValid() {
		to = d.srv
	}
	return d.send(d.last, to)
}

// process takes one packet: from the server's TID (learned from its first
// reply), else it is a stranger's (ERROR 5, docs/protocols.md §1.1).
func (d *download) process(pkt []byte, from netip.AddrPort) (done bool, err error) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if !d.peer.IsValid() {
		if from.Addr() != d.srv.Addr() {
			return false, nil // not our server
		}
		d.peer = from
		d.res.ServerAddr = from
	} else if from != d.peer {
		d.uc.WriteTo(AppendError(nil, ErrCodeUnknownTID, "unknown transfer ID"), from)
		return false, nil
	}
	switch PacketOpcode(pkt) {
	case OpOACK:
		return false, d.onOACK(pkt)
	case OpDATA:
		return d.onData(pkt)
	case OpERROR:
		code, msg, _ := ParseError(pkt)
		return false, &RemoteError{Code: code, Message: msg}
	}
	return false, nil
}

// onOACK takes the server's OACK: the options it granted set up the
// receive state, and ACK 0 starts the transfer (docs/protocols.md §3.4
// rule 5).
func (d *download) onOACK(pkt []byte) error {
	if d.rx.have > 0 {
		return nil // a stale OACK, delayed behind data
	}
	if d.res.Negotiated != nil {
		// The server repeats its OACK: it did not get our ACK 0. Answer
		// each repeat at once. Waiting for our own timer lost transfers
		// at 20 % loss: a server that gives up after a short stall
		// (tftp.stall_timeout) saw too few of our re-ACKs. It cannot
		// start a Sorcerer's Apprentice: a repeated ACK 0 never makes the
		// server send the first window twice (tftp/window.go, onAck).
		return d.ack()
	}
	opts, err := ParseOACK(pkt)
	if err != nil {
		d.uc.WriteTo(AppendError(nil, ErrCodeOptionRefuse, "bad OACK"), d.peer)
		return err
	}
	if err := d.c.applyOACK(opts, &d.res, &d.rx.rollover); err != nil {
		d.uc.WriteTo(AppendError(nil, ErrCodeOptionRefuse, err.Error()), d.peer)
		return err
	}
	d.res.Negotiated = opts
	d.rx.size, d.rx.blksize = uint64(d.res.WindowSize), d.res.BlockSize
	d.sample()
	d.timeouts = 0
	return d.ack()
}

// onData takes a DATA packet: the receive state says what it means.
func (d *download) onData(pkt []byte) (done bool, err error) {
	wire, payload, _ := ParseData(pkt)
	acked := d.rx.have == d.rx.acked // the block answers our last ACK
	switch v := d.rx.onData(wire, payload, time.Now()); v {
	case dataDup:
		d.res.Duplicates++
	case dataReAck:
		d.res.Duplicates++
		return false, d.ack()
	case dataHeld, dataDropped:
		d.res.OutOfOrder++
	case dataDeliver, dataAck, dataFinal:
		if acked {
			d.sample()
		}
		if err := d.deliver(); err != nil {
			return false, err
		}
		switch v {
		case dataAck:
			return false, d.ack()
		case dataFinal:
			return true, d.finish()
		}
	}
	return false, nil
}

// deliver writes the blocks the receive state put in order.
func (d *download) deliver() error {
	for _, p := range d.rx.ready {
		if _, err := d.out.Write(p); err != nil {
			d.uc.WriteTo(AppendError(nil, ErrCodeDiskFull, "write failed"), d.peer)
			return err
		}
		d.res.Bytes += int64(len(p))
		if d.c.Progress != nil {
			d.c.Progress(d.res.Bytes, d.res.TSize)
		}
	}
	d.res.Blocks = d.rx.have
	d.timeouts = 0
	d.est.Progress()
	return nil
}

// finish ACKs the final block and flushes what is buffered.
func (d *download) finish() error {
	if err := d.ack(); err != nil {
		return err
	}
	if f, ok := d.out.(*netasciiDecoder); ok {
		if err := f.Close(); err != nil {
			return err
		}
	}
	if err := d.bw.Flush(); err != nil {
		return err
	}
	d.res.Duration = time.Since(d.start)
	return nil
}

// sample measures the round trip to the answer of the last packet sent,
// once, and only when nothing was resent (Karn).
func (d *download) sample() {
	if !d.sampled && d.timeouts == 0 {
		d.est.Sample(time.Since(d.sentAt))
		d.sampled = true
	}
}

func (d *download) send(b []byte, to netip.AddrPort) error {
	d.last = b
	d.sentAt = time.Now()
	return d.uc.WriteTo(b, to)
}

// ack sends an ACK of the last block held in order.
func (d *download) ack() error {
	d.abuf = AppendAck(d.abuf[:0], d.rx.ack())
	return d.send(d.abuf, d.peer)
}

// packetReader reads datagrams in batches where the conn can (recvmmsg,
// and UDP GRO splitting coalesced windows): a receiver reading one
// datagram per syscall is slower than the server (docs/lab-notes.md, "UDP
// send paths").
type packetReader struct {
	uc   conn
	br   batchReader // nil: one datagram per read
	bufs [][]byte
	pkts []udpio.Packet
}

func newPacketReader(uc conn) *packetReader {
	r := &packetReader{uc: uc}
	if br, ok := uc.(batchReader); ok {
		r.br = br
		r.bufs = make([][]byte, 8)
		for i := range r.bufs {
			r.bufs[i] = make([]byte, 1<<16)
		}
		r.pkts = make([]udpio.Packet, 8*64)
		return r
	}
	r.bufs = [][]byte{make([]byte, MaxBlockSize+HeaderLen+1)}
	r.pkts = make([]udpio.Packet, 1)
	return r
}

// read returns the next datagrams; they are valid until the next read.
func (r *packetReader) read() ([]udpio.Packet, error) {
	if r.br != nil {
		n, err := r.br.ReadBatch(r.bufs, r.pkts)
		if err != nil {
			return nil, err
		}
		return r.pkts[:n], nil
	}
	k, from, err := r.uc.ReadFrom(r.bufs[0])
	if err != nil {
		return nil, err
	}
	r.pkts[0] = udpio.Packet{Data: r.bufs[0][:k], Src: from}
	return r.pkts[:1], nil
}

// batchReader is what a conn offers when it reads datagrams in batches.
type batchReader interface {
	ReadBatch(bufs [][]byte, out []udpio.Packet) (int, error)
}

// applyOACK checks the server's answer against what was asked (a server
// may lower blksize and windowsize, never raise them; RFC 2347/2348/7440).
func (c *Client) applyOACK(opts []Option, res *GetResult, rollover *uint16) error {
	for _, o := range opts {
		switch strings.ToLower(o.Name) {
		case OptBlockSize:
			v, ok := parseUint(o.Value, MinBlockSize, MaxBlockSize)
			if !ok || c.BlockSize == 0 || v > c.BlockSize {
				return fmt.Errorf("server answered blksize %q to %d", o.Value, c.BlockSize)
			}
			res.BlockSize = v
		case OptWindowSize:
			v, ok := parseUint(o.Value, 1, MaxWindowSize)
			if !ok || c.WindowSize == 0 || v > c.WindowSize {
				return fmt.Errorf("server answered windowsize %q to %d", o.Value, c.WindowSize)
			}
			res.WindowSize = v
		case OptTransferSz:
			v, err := strconv.ParseInt(o.Value, 10, 64)
			if err != nil || v < 0 {
				return fmt.Errorf("server answered tsize %q", o.Value)
			}
			res.TSize = v
		case OptRollover:
			if o.Value == "1" {
				*rollover = 1
			}
		}
	}
	return nil
}

// resolveServer resolves "host:port", "[v6]:port", or a host or address
// alone ("boot", "192.0.2.1", "2001:db8::1", "[2001:db8::1]") on port 69.
// A name with both kinds of address resolves to its IPv4 one (Go's
// resolver for "udp").
func resolveServer(s string) (netip.AddrPort, error) {
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "69")
	}
	ua, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// netasciiDecoder turns netascii back into local text: CR LF → LF,
// CR NUL → CR (RFC 1350 via RFC 764), carrying a CR across blocks.
type netasciiDecoder struct {
	w   io.Writer
	cr  bool
	out []byte
}

func (d *netasciiDecoder) Write(p []byte) (int, error) {
	d.out = d.out[:0]
	for _, b := range p {
		if d.cr {
			d.cr = false
			switch b {
			case '\n':
				d.out = append(d.out, '\n')
				continue
			case 0:
				d.out = append(d.out, '\r')
				continue
			default:
				d.out = append(d.out, '\r') // lenient: a bare CR
			}
		}
		if b == '\r' {
			d.cr = true
			continue
		}
		d.out = append(d.out, b)
	}
	_, err := d.w.Write(d.out)
	return len(p), err
}

// Close flushes a trailing bare CR.
func (d *netasciiDecoder) Close() error {
	if d.cr {
		d.cr = false
		_, err := d.w.Write([]byte{'\r'})
		return err
	}
	return nil
}

// IsNotFound reports whether err is the server's "file not found".
func IsNotFound(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == ErrCodeNotFound
}

func (c *Client) writeBuffer() int {
	if c.WriteBuffer > 0 {
		return c.WriteBuffer
	}
	return 1 << 20
}
