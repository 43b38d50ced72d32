package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// Outcome is how a transfer ended; it is the last field of the transfer log
// line and the label of the outcome counters. The multicast sessions
// (mtftp) log theirs with the same values.
type Outcome string

// Outcomes.
const (
	OutcomeOK          Outcome = "ok"
	OutcomeUnconfirmed Outcome = "ok-unconfirmed" // final ACK never came (docs/protocols.md §1.5)
	OutcomeProbe       Outcome = "probe"          // ERROR right after the OACK: UEFI size probe
	OutcomeAborted     Outcome = "aborted"        // the client sent an ERROR
	OutcomeTimeout     Outcome = "timeout"
	OutcomeFileChanged Outcome = "file-changed"
	OutcomeShutdown    Outcome = "shutdown"
	OutcomeError       Outcome = "error"
	OutcomeLifetime    Outcome = "lifetime"
	OutcomeEvicted     Outcome = "evicted" // unconfirmed, its place taken by a newer request (slots.go)
	OutcomeBusy        Outcome = "busy"    // confirmed when every confirmed slot was taken
	OutcomeDropped     Outcome = "dropped" // mtftp: a receiver its multicast session gave up on
)

// timing holds a session's retransmission parameters.
type timing struct {
	InitialRTO, MinRTO, MaxRTO time.Duration
	Retries                    int           // consecutive timeouts before giving up
	StallTimeout               time.Duration // and at least this long without progress
	Lifetime                   time.Duration // hard cap on one transfer; 0 = none
	// ConfirmTimeout ends a transfer whose peer has not answered at all
	// within it (its request may be spoofed); 0 = no such limit.
	ConfirmTimeout time.Duration
}

// result is what a finished transfer reports for its log line and counters.
type result struct {
	Outcome     Outcome
	Err         error
	Bytes       int64  // file bytes acknowledged (read) or written (write)
	Blocks      uint64 // blocks acknowledged or received
	Retransmits uint64
	Syscalls    uint64
	Datagrams   uint64
	Start, End  time.Time
	RTO         time.Duration // the retransmission timeout when the transfer ended
	Heard       bool          // the peer sent something: not (only) a spoofed request
}

// blockSource yields the payload of block n (1-based). The returned slice
// is only valid until the next call.
type blockSource interface {
	block(n uint64) ([]byte, error)
}

// mappedSource serves octet blocks straight out of the file's mapping: the
// payload slices point into it and the kernel copies from there.
type mappedSource struct {
	data    []byte
	blksize int
}

func (m *mappedSource) block(n uint64) ([]byte, error) {
	off := (n - 1) * uint64(m.blksize)
	if off > uint64(len(m.data)) {
		return nil, io.ErrUnexpectedEOF
	}
	end := min(off+uint64(m.blksize), uint64(len(m.data)))
	return m.data[off:end], nil
}

// netasciiSource converts on the fly. Netascii never negotiates a window
// (see Negotiate), so the sender only ever asks for the current block again
// (retransmit) or the next one.
type netasciiSource struct {
	r       io.Reader
	blksize int
	cur     uint64
	buf     []byte
	n       int
}

func (s *netasciiSource) block(n uint64) ([]byte, error) {
	switch n {
	case s.cur:
		return s.buf[:s.n], nil
	case s.cur + 1:
		if s.buf == nil {
			s.buf = make([]byte, s.blksize)
		}
		k, err := io.ReadFull(s.r, s.buf)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		s.cur, s.n = n, k
		return s.buf[:k], nil
	}
	return nil, fmt.Errorf("netascii: block %d requested after %d", n, s.cur)
}

// readSession sends one file to one client.
type readSession struct {
	c        conn
	peer     netip.AddrPort
	src      blockSource
	size     int64 // bytes on the wire (netascii: converted size)
	neg      Negotiated
	oack     []byte // empty: no options acknowledged, DATA 1 goes first
	timing   timing
	counters *Counters
	// truncated reports whether the file shrank under the transfer
	// (called after a fault or a send error).
	truncated func() bool
	// prog is where the session publishes its progress; nil = nowhere.
	prog *progress
	// confirm is called when the peer first answers (its request was
	// not spoofed); an error ends the session (errEvicted: silently,
	// errBusy: with an ERROR). nil = nothing to confirm.
	confirm func() error

	// hot-path buffers, allocated once per session
	hdrs []byte
	dgs  []udpio.Datagram
	rbuf []byte
	replier
}

// errFileChanged ends a transfer whose file was truncated under it.
var errFileChanged = errors.New("file changed during transfer")

func (s *readSession) run(ctx context.Context) (res result) {
	res.Start = time.Now()
	if s.prog == nil {
		s.prog = new(progress)
	}
	est := rto.New(s.timing.InitialRTO, s.timing.MinRTO, s.timing.MaxRTO)
	defer func() { res.End, res.RTO = time.Now(), est.RTO() }()
	// A mapping whose file is truncated raises SIGBUS when touched;
	// CatchFault turns that into an error here, so one transfer fails,
	// not the server (docs/design.md, "Hot path rules").
	defer filestore.CatchFault(func(err error) {
		res.Outcome, res.Err = OutcomeFileChanged, fmt.Errorf("%w: %w", errFileChanged, err)
		s.sendError(ErrCodeUndefined, errFileChanged.Error())
	})()
	stop := context.AfterFunc(ctx, func() { s.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	s.hdrs = make([]byte, HeaderLen*s.neg.WindowSize)
	s.dgs = make([]udpio.Datagram, s.neg.WindowSize)
	s.rbuf = make([]byte, 2048)
	w := window{size: uint64(s.neg.WindowSize), final: BlockCount(s.size, s.neg.BlockSize)}
	if s.neg.Timeout > 0 {
		// The client's timeout caps ours: it retransmits its ACK after
		// that long, so waiting longer only adds to a stall.
		est.LimitMax(s.neg.Timeout)
	}
	var lifetime time.Time
	if s.timing.Lifetime > 0 {
		lifetime = res.Start.Add(s.timing.Lifetime)
	}

	oackPending := len(s.oack) > 0
	var (
		sentAt    time.Time
		resent    bool   // the outstanding window or OACK was sent more than once (Karn)
		highWater uint64 // highest block ever sent
		timeouts  int
		heard     bool        // the peer has ACKed something: not a spoofed request
		progress  = res.Start // last time the peer moved the transfer on
		confirmBy time.Time   // end of the wait for the peer's first answer
	)
	defer func() { res.Heard = heard }()
	if s.timing.ConfirmTimeout > 0 {
		confirmBy = res.Start.Add(s.timing.ConfirmTimeout)
	}
	if evicted(ctx) {
		res.Outcome, res.Err = OutcomeEvicted, errEvicted
		return res
	}
	send := func(retransmit bool) error {
		sentAt = time.Now()
		resent = retransmit
		if oackPending {
			if retransmit {
				s.counters.Retransmits.Add(1)
				res.Retransmits++
				s.prog.retransmits.Store(res.Retransmits)
			}
			return s.c.WriteTo(s.oack, s.peer)
		}
		from, to := w.next()
		if from <= highWater {
			k := min(to, highWater) - from + 1
			s.counters.Retransmits.Add(k)
			res.Retransmits += k
			s.prog.retransmits.Store(res.Retransmits)
			resent = true
		}
		highWater = max(highWater, to)
		return s.sendBlocks(from, to, &res)
	}

	if err := send(false); err != nil {
		return s.fail(&res, err)
	}
	for {
		deadline := sentAt.Add(est.RTO())
		if !lifetime.IsZero() && deadline.After(lifetime) {
			deadline = lifetime
		}
		if !heard && !confirmBy.IsZero() && deadline.After(confirmBy) {
			deadline = confirmBy
		}
		s.c.SetReadDeadline(deadline)
		// Checked after the deadline is set: a cancel from here on moves
		// the deadline into the past (AfterFunc above) and wakes the read.
		if ctx.Err() != nil {
			if evicted(ctx) {
				res.Outcome, res.Err = OutcomeEvicted, errEvicted
				return res
			}
			s.sendError(ErrCodeUndefined, "server shutting down")
			res.Outcome, res.Err = OutcomeShutdown, ctx.Err()
			return res
		}
		n, from, err := s.c.ReadFrom(s.rbuf)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if !isTimeout(err) {
				return s.fail(&res, err)
			}
			now := time.Now()
			if !lifetime.IsZero() && !now.Before(lifetime) {
				s.sendError(ErrCodeUndefined, "transfer time limit exceeded")
				res.Outcome, res.Err = OutcomeLifetime, errors.New("session lifetime exceeded")
				return res
			}
			if now.Before(deadline) {
				continue // woken early (deadline moved); keep waiting
			}
			s.counters.Timeouts.Add(1)
			timeouts++
			if !heard && !confirmBy.IsZero() && !now.Before(confirmBy) {
				res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no answer within %s (confirm_timeout)", s.timing.ConfirmTimeout)
				return res
			}
			if s.giveUp(timeouts, heard, now.Sub(progress)) {
				if heard && !oackPending && w.sent == w.final && w.acked+w.size >= w.final {
					// The peer took every window but the last, and the
					// last went out: only the final ACK is missing.
					res.Outcome = OutcomeUnconfirmed
					res.Bytes, res.Blocks = s.size, w.final
					return res
				}
				res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no answer after %d retries in %s", timeouts-1, now.Sub(progress).Round(time.Millisecond))
				res.Bytes, res.Blocks = int64(w.acked)*int64(s.neg.BlockSize), w.acked
				return res
			}
			est.Timeout()
			if err := send(true); err != nil {
				return s.fail(&res, err)
			}
			continue
		}
		if from != s.peer {
			s.unknownTID(from)
			continue
		}
		switch PacketOpcode(s.rbuf[:n]) {
		case OpACK:
			wire, err := ParseAck(s.rbuf[:n])
			if err != nil {
				s.counters.BadPacket.Add(1)
				continue
			}
			if oackPending {
				if wire != 0 {
					s.counters.DupAck.Add(1)
					continue
				}
				if !heard && s.confirm != nil {
					if err := s.confirm(); err != nil {
						return s.notConfirmed(s.c, s.peer, &res, err)
					}
				}
				oackPending = false
				if !resent {
					est.Sample(time.Since(sentAt))
				}
				heard, progress = true, time.Now()
				timeouts = 0
				est.Progress()
				if err := send(false); err != nil {
					return s.fail(&res, err)
				}
				continue
			}
			blk, ok := unwrapBlock(wire, w.acked, w.sent, s.neg.Rollover)
			if !ok {
				s.counters.DupAck.Add(1)
				continue
			}
			switch w.onAck(blk) {
			case ackStale:
				s.counters.DupAck.Add(1)
				continue
			case ackDone:
				heard = true
				res.Outcome = OutcomeOK
				res.Bytes, res.Blocks = s.size, w.final
				return res
			case ackGap:
				s.counters.GapAck.Add(1)
			case ackWindow:
				if !resent {
					est.Sample(time.Since(sentAt))
				}
			}
			if !heard && s.confirm != nil {
				if err := s.confirm(); err != nil {
					return s.notConfirmed(s.c, s.peer, &res, err)
				}
			}
			heard, progress = true, time.Now()
			timeouts = 0
			est.Progress()
			s.prog.bytes.Store(min(int64(w.acked)*int64(s.neg.BlockSize), s.size))
			if err := send(false); err != nil {
				return s.fail(&res, err)
			}
		case OpERROR:
			heard = true
			code, msg, _ := ParseError(s.rbuf[:n])
			res.Err = &RemoteError{Code: code, Message: msg}
			res.Outcome = OutcomeAborted
			if oackPending && s.neg.TSizeAsked {
				// EDK2/EFI size probe: RRQ tsize=0, read the OACK, ERROR 8.
				res.Outcome = OutcomeProbe
			}
			res.Bytes, res.Blocks = int64(w.acked)*int64(s.neg.BlockSize), w.acked
			return res
		default:
			s.counters.BadPacket.Add(1)
		}
	}
}

// preAckRetries bounds what an unverified request can buy: until the peer
// ACKs something, the source address may be spoofed, so the first window
// (or OACK) is sent at most this many more times (amplification, and a
// spoofed request must not hold a session slot for a minute: with the
// default RTOs it is released after 1+2+4+8+8 = 23 s). Four retries still
// get through 20 % loss each way 99.4 % of the time (1 − 0.36^5).
const preAckRetries = 4

// giveUp decides after a timeout whether the transfer is dead: more
// consecutive timeouts than allowed and, once the peer has been heard, at
// least StallTimeout of silence, so a firmware stall or a link flap of a
// few seconds does not kill a boot (tftp-hpa waits ~63 s, dnsmasq 120 s).
func (s *readSession) giveUp(timeouts int, heard bool, silence time.Duration) bool {
	if !heard {
		return timeouts > min(preAckRetries, s.timing.Retries)
	}
	return timeouts > s.timing.Retries && silence >= s.timing.StallTimeout
}

// sendBlocks sends blocks from..to as one window.
func (s *readSession) sendBlocks(from, to uint64, res *result) error {
	k, bytes := 0, 0
	for b := from; b <= to; b++ {
		p, err := s.src.block(b)
		if err != nil {
			return err
		}
		h := s.hdrs[k*HeaderLen : (k+1)*HeaderLen]
		PutDataHeader(h, wireBlock(b, s.neg.Rollover))
		s.dgs[k] = udpio.Datagram{Hdr: h, Payload: p}
		bytes += len(p)
		k++
	}
	calls, err := s.c.WriteDatagrams(s.peer, s.dgs[:k])
	// Shared counters: one atomic add each per window, not per block.
	s.counters.BytesSent.Add(uint64(bytes))
	s.counters.SendSyscalls.Add(uint64(calls))
	s.counters.DataSent.Add(uint64(k))
	res.Syscalls += uint64(calls)
	res.Datagrams += uint64(k)
	if err != nil {
		s.counters.SendErrors.Add(1)
		if errors.Is(err, syscall.EFAULT) || (s.truncated != nil && s.truncated()) {
			return errFileChanged
		}
		// Transient kernel back-pressure is loss: the timer resends.
		if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
			return nil
		}
		return err
	}
	return nil
}

func (s *readSession) fail(res *result, err error) result {
	res.Err = err
	res.Outcome = OutcomeError
	if errors.Is(err, errFileChanged) {
		res.Outcome = OutcomeFileChanged
		s.sendError(ErrCodeUndefined, errFileChanged.Error())
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		s.sendError(ErrCodeUndefined, "internal server error")
	}
	return *res
}

// evicted reports whether ctx was cancelled because the session's
// unconfirmed request was evicted (slots.go): it then ends without a word.
func evicted(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), errEvicted)
}

// notConfirmed ends a session whose request could not be confirmed when
// its peer first answered: evicted meanwhile (silently), or no confirmed
// slot free (an ERROR: the peer has shown it owns its address).
func (r *replier) notConfirmed(c conn, peer netip.AddrPort, res *result, err error) result {
	res.Err = err
	if errors.Is(err, errBusy) || errors.Is(err, errAddressBusy) {
		res.Outcome = OutcomeBusy
		r.sendError(c, peer, ErrCodeUndefined, err.Error())
		return *res
	}
	res.Outcome = OutcomeEvicted
	return *res
}

// replier sends a session's ERROR packets: to its peer, and rate-limited
// ERROR 5 to strangers. Shared by read and write sessions.
type replier struct {
	ebuf  []byte
	tidAt time.Time // last ERROR 5 sent
}

func (r *replier) sendError(c conn, peer netip.AddrPort, code ErrorCode, msg string) {
	r.ebuf = AppendError(r.ebuf[:0], code, msg)
	c.WriteTo(r.ebuf, peer)
}

// unknownTID answers a stranger with ERROR 5 (RFC 1350 §4), at most ten
// times a second per transfer: the reply is a reflection vector.
func (r *replier) unknownTID(c conn, from netip.AddrPort, counters *Counters) {
	counters.UnknownTID.Add(1)
	now := time.Now()
	if now.Sub(r.tidAt) < 100*time.Millisecond {
		return
	}
	r.tidAt = now
	r.ebuf = AppendError(r.ebuf[:0], ErrCodeUnknownTID, "unknown transfer ID")
	c.WriteTo(r.ebuf, from)
}

func (s *readSession) sendError(code ErrorCode, msg string) {
	s.replier.sendError(s.c, s.peer, code, msg)
}
func (s *readSession) unknownTID(from netip.AddrPort) { s.replier.unknownTID(s.c, from, s.counters) }
