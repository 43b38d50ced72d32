package tftp

import (
	"bufio"
	"bytes"
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
	c2, err := c.open()
	if err != nil {
		return res, err
	}
	defer c2.Close()
	return c.get(ctx, udpConn{c2}, srv, remote, w, start)
}

// open opens the client's socket (on LocalAddr, if set).
func (c *Client) open() (*udpio.Conn, error) {
	var laddr *net.UDPAddr
	if c.LocalAddr.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.LocalAddr.Unmap(), 0))
	}
	uc, err := net.ListenUDP("udp4", laddr)
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
	uc, err := c.open()
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
	res := GetResult{TSize: -1, BlockSize: DefaultBlockSize, WindowSize: 1}
	server := srv.String()
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	req := c.request(remote)
	mode := req.Mode
	rrq := req.Marshal(nil)
	retries := c.Retries
	if retries <= 0 {
		retries = DefaultRetries
	}
	initial := c.Timeout
	if initial <= 0 {
		initial = time.Second
	}
	est := rto.New(initial, 20*time.Millisecond, 10*time.Second)

	// One write per block would cost a syscall per 1468 bytes: buffer,
	// and flush before the final ACK reports success. WriteBuffer lets a
	// caller that reads only a prefix (an image's index) see each block
	// as it comes.
	bw := bufio.NewWriterSize(w, c.writeBuffer())
	var out io.Writer = bw
	if mode == "netascii" {
		out = &netasciiDecoder{w: bw}
	}
	var (
		peer     netip.AddrPort // server TID, learned from the first reply
		have     uint64         // highest block received in order
		ackedTo  uint64
		gapAcked bool
		dupAcked bool // re-ACKed a repeated block since the last progress
		sentAt   time.Time
		last     []byte // last packet sent, for retransmission
		abuf     []byte
		timeouts int
		rollover uint16
		sampled  bool
		// ahead holds blocks that arrived ahead of a gap, within the
		// window, until the gap fills; gapAt is when the current gap was
		// first seen (zero: none). The gap is ACKed (RFC 7440 §3) only if
		// it outlives reorderHold, so blocks that were merely reordered
		// cost no resend of the window.
		ahead map[uint64][]byte
		gapAt time.Time
	)
	send := func(b []byte, to netip.AddrPort) error {
		last = b
		sentAt = time.Now()
		return uc.WriteTo(b, to)
	}
	ack := func(to netip.AddrPort) error {
		abuf = AppendAck(abuf[:0], wireBlock(have, rollover))
		ackedTo = have
		return send(abuf, to)
	}
	if err := send(rrq, srv); err != nil {
		return res, err
	}
	var deliver func(blk uint64, payload []byte) (bool, error)
	process := func(pkt []byte, from netip.AddrPort) (done bool, err error) {
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !peer.IsValid() {
			if from.Addr() != srv.Addr() {
				return false, nil // not our server
			}
			peer = from
			res.ServerAddr = peer
		} else if from != peer {
			uc.WriteTo(AppendError(nil, ErrCodeUnknownTID, "unknown transfer ID"), from)
			return false, nil
		}
		switch PacketOpcode(pkt) {
		case OpOACK:
			if have > 0 {
				return false, nil // a stale OACK, delayed behind data
			}
			if res.Negotiated != nil {
				// The server repeats its OACK: it did not get our ACK 0.
				// Answer each repeat at once. Waiting for our own timer
				// lost transfers at 20 % loss: a server that gives up
				// after a short stall (tftp.stall_timeout) saw too few
				// of our re-ACKs. It cannot start a Sorcerer's
				// Apprentice: a repeated ACK 0 never makes the server
				// send the first window twice (tftp/window.go, onAck).
				return false, ack(peer)
			}
			opts, err := ParseOACK(pkt)
			if err != nil {
				uc.WriteTo(AppendError(nil, ErrCodeOptionRefuse, "bad OACK"), peer)
				return false, err
			}
			if err := c.applyOACK(opts, &res, &rollover); err != nil {
				uc.WriteTo(AppendError(nil, ErrCodeOptionRefuse, err.Error()), peer)
				return false, err
			}
			res.Negotiated = opts
			if !sampled && timeouts == 0 {
				est.Sample(time.Since(sentAt))
				sampled = true
			}
			timeouts = 0
			if err := ack(peer); err != nil {
				return false, err
			}
		case OpDATA:
			wire, payload, _ := ParseData(pkt)
			if len(payload) > res.BlockSize {
				return false, nil
			}
			blk, ok := unwrapBlock(wire, have, have+uint64(res.WindowSize), rollover)
			if !ok || blk == have {
				res.Duplicates++
				// A block we already hold. If we are at a window boundary
				// (everything held is ACKed), the server resent because our
				// ACK was lost: repeat it, once per position. Mid-window a
				// duplicate is the network's doing, and an ACK there would
				// read as a gap notice and make the server resend.
				if !dupAcked && have == ackedTo {
					dupAcked = true
					if err := ack(peer); err != nil {
						return false, err
					}
				}
				return false, nil
			}
			if blk != have+1 {
				if _, held := ahead[blk]; held {
					res.Duplicates++
				} else {
					res.OutOfOrder++
					if ahead == nil {
						ahead = make(map[uint64][]byte)
					}
					ahead[blk] = bytes.Clone(payload)
				}
				if gapAt.IsZero() {
					gapAt = time.Now()
				}
				return false, nil
			}
			done, err := deliver(blk, payload)
			for !done && err == nil && len(ahead) > 0 {
				p, ok := ahead[have+1]
				if !ok {
					break
				}
				delete(ahead, have+1)
				done, err = deliver(have+1, p)
			}
			// Blocks still held are ahead of a new gap (or of none).
			gapAt = time.Time{}
			for b := range ahead {
				if b <= have {
					delete(ahead, b)
				} else {
					gapAt = time.Now()
				}
			}
			if done || err != nil {
				return done, err
			}
			if have-ackedTo >= uint64(res.WindowSize) {
				if err := ack(peer); err != nil {
					return false, err
				}
			}
		case OpERROR:
			code, msg, _ := ParseError(pkt)
			return false, &RemoteError{Code: code, Message: msg}
		}
		return false, nil
	}
	// deliver writes block blk, the next in order, and reports done after
	// the final (short) block, which it ACKs.
	deliver = func(blk uint64, payload []byte) (bool, error) {
		if _, err := out.Write(payload); err != nil {
			uc.WriteTo(AppendError(nil, ErrCodeDiskFull, "write failed"), peer)
			return false, err
		}
		if !sampled && timeouts == 0 && have == ackedTo {
			est.Sample(time.Since(sentAt))
			sampled = true
		}
		have, gapAcked, dupAcked, timeouts = blk, false, false, 0
		est.Progress()
		res.Bytes += int64(len(payload))
		res.Blocks = have
		if c.Progress != nil {
			c.Progress(res.Bytes, res.TSize)
		}
		if len(payload) < res.BlockSize {
			if err := ack(peer); err != nil {
				return false, err
			}
			if f, ok := out.(*netasciiDecoder); ok {
				if err := f.Close(); err != nil {
					return false, err
				}
			}
			if err := bw.Flush(); err != nil {
				return false, err
			}
			res.Duration = time.Since(start)
			return true, nil
		}
		return false, nil
	}
	// Reads come in batches where the conn can (recvmmsg, and UDP GRO
	// splitting coalesced windows): a receiver reading one datagram per
	// syscall is slower than the server (docs/lab-notes.md, "UDP send
	// paths").
	br, batched := uc.(batchReader)
	bufs := [][]byte{make([]byte, MaxBlockSize+HeaderLen+1)}
	pkts := make([]udpio.Packet, 1)
	if batched {
		bufs = make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, 1<<16)
		}
		pkts = make([]udpio.Packet, 8*64)
	}
	for {
		deadline := sentAt.Add(est.RTO())
		gapDue := time.Time{}
		if !gapAt.IsZero() && !gapAcked {
			gapDue = gapAt.Add(reorderHold(est.RTO()))
		}
		if !gapDue.IsZero() && gapDue.Before(deadline) {
			uc.SetReadDeadline(gapDue)
		} else {
			uc.SetReadDeadline(deadline)
		}
		if err := ctx.Err(); err != nil {
			if peer.IsValid() {
				uc.WriteTo(AppendError(nil, ErrCodeUndefined, "cancelled"), peer)
			}
			return res, err
		}
		var n int
		var err error
		if batched {
			n, err = br.ReadBatch(bufs, pkts)
		} else {
			var k int
			var from netip.AddrPort
			k, from, err = uc.ReadFrom(bufs[0])
			pkts[0] = udpio.Packet{Data: bufs[0][:k], Src: from}
			n = 1
		}
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if !isTimeout(err) {
				return res, err
			}
			if !gapDue.IsZero() && !time.Now().Before(gapDue) && !gapAcked && !gapAt.IsZero() {
				// RFC 7440 §3: a sequence error (a gap that outlived the
				// reordering hold) is answered with an ACK of the last
				// block held in order, once per position.
				gapAcked = true
				if err := ack(peer); err != nil {
					return res, err
				}
				continue
			}
			if time.Now().Before(deadline) {
				continue
			}
			res.Timeouts++
			if timeouts++; timeouts > retries {
				return res, fmt.Errorf("tftp: %s: %w from %s after %d retries", remote, ErrNoAnswer, server, retries)
			}
			est.Timeout()
			if peer.IsValid() && (have > 0 || res.Negotiated != nil) {
				// Tell the server where we are (the last block held in
				// order), which is news if our last ACK was lost.
				if err := ack(peer); err != nil {
					return res, err
				}
				continue
			}
			to := peer
			if !peer.IsValid() {
				to = srv
			}
			if err := send(last, to); err != nil {
				return res, err
			}
			continue
		}
		for _, p := range pkts[:n] {
			done, err := process(p.Data, p.Src)
			if err != nil || done {
				return res, err
			}
		}
	}
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

func resolveServer(s string) (netip.AddrPort, error) {
	if !strings.Contains(s, ":") {
		s += ":69"
	}
	ua, err := net.ResolveUDPAddr("udp4", s)
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

// reorderHold is how long a gap may stay open before the client reports
// it: a quarter of the retransmission timeout, 2 ms at least and 50 ms at
// most. Datagrams reordered on the path (link aggregation, the lab's
// jitter) arrive within it, so they cost no resend of the window; a block
// really lost is reported this much later than at once.
func reorderHold(rto time.Duration) time.Duration {
	return min(max(rto/4, 2*time.Millisecond), 50*time.Millisecond)
}

func (c *Client) writeBuffer() int {
	if c.WriteBuffer > 0 {
		return c.WriteBuffer
	}
	return 1 << 20
}
