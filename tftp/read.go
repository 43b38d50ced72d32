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
	// peak is the server's shared RTT peak (nil: none): a transfer's
	// floor stays above the server's recent stalls (docs/protocols.md §1.7).
	peak *rto.Shared
}

// estimator returns a fresh retransmission timer for a transfer.
func (t timing) estimator() rto.Estimator {
	e := rto.New(t.InitialRTO, t.MinRTO, t.MaxRTO)
	e.Share(t.peak)
	return e
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

// readSession sends one file to one client. window is its state; run
// drives it: it sends a window, waits, and takes the peer's answer
// (onPacket) or the timer's (onTimeout).
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

	// run's state
	est         rto.Estimator
	w           window
	oackPending bool      // the OACK is out and not yet acknowledged
	sentAt      time.Time // when the outstanding window or OACK went out
	resent      bool      // it was sent more than once (Karn)
	firstSentAt time.Time // when its first copy went out
	timerResent uint64    // blocks (or the OACK) the timer last resent; 0 after an answer
	highWater   uint64    // highest block ever sent
	timeouts    int       // consecutive timeouts
	heard       bool      // the peer has ACKed something: not a spoofed request
	progress    time.Time // last time the peer moved the transfer on
}

// errFileChanged ends a transfer whose file was truncated under it.
var errFileChanged = errors.New("file changed during transfer")

func (s *readSession) run(ctx context.Context) (res result) {
	res.Start = time.Now()
	if s.prog == nil {
		s.prog = new(progress)
	}
	s.est = s.timing.estimator()
	defer func() { res.End, res.RTO, res.Heard = time.Now(), s.est.RTO(), s.heard }()
	// A mapping whose file is truncated raises SIGBUS when touched;
	// CatchFault turns that into an error here, so one transfer fails,
	// not the server (docs/design.md, "Hot path rules").
	defer filestore.CatchFault(func(err error) {
		res.Outcome, res.Err = OutcomeFileChanged, fmt.Errorf("%w: %w", errFileChanged, err)
		s.sendError(ErrCodeUndefined, errFileChanged.Error())
	})()
	wait := newSessionWait(s.c, s.peer, s.counters, res.Start, s.timing, "answer", &s.replier)
	defer wait.wakeOnCancel(ctx)()
	s.prepare(res.Start)
	if wait.evicted(ctx, &res) {
		return res
	}
	if err := s.send(false, &res); err != nil {
		return s.fail(&res, err)
	}
	for {
		n, ev, err := wait.next(ctx, s.rbuf, s.sentAt.Add(s.est.RTO()), time.Time{}, !s.heard, &res)
		done := false
		switch ev {
		case waitEnd:
			return res
		case waitFailed:
			return s.fail(&res, err)
		case waitTimeout:
			if n, ok := s.answered(&wait); ok {
				done, err = s.onPacket(s.rbuf[:n], &res)
				break
			}
			done, err = s.onTimeout(&res)
		case waitPacket:
			done, err = s.onPacket(s.rbuf[:n], &res)
		}
		if err != nil {
			return s.fail(&res, err)
		}
		if done {
			return res
		}
	}
}

// prepare allocates the session's buffers and sets up its window and timer.
func (s *readSession) prepare(start time.Time) {
	s.hdrs = make([]byte, HeaderLen*s.neg.WindowSize)
	s.dgs = make([]udpio.Datagram, s.neg.WindowSize)
	s.rbuf = make([]byte, 2048)
	s.w = window{size: uint64(s.neg.WindowSize), final: BlockCount(s.size, s.neg.BlockSize)}
	if s.neg.Timeout > 0 {
		// The client's timeout caps ours: it retransmits its ACK after
		// that long, so waiting longer only adds to a stall.
		s.est.LimitMax(s.neg.Timeout)
	}
	s.oackPending = len(s.oack) > 0
	s.progress = start
}

// send sends the OACK while it is unacknowledged, else the window after the
// last acknowledged block (a retransmission when it repeats blocks).
func (s *readSession) send(retransmit bool, res *result) error {
	s.sentAt = time.Now()
	s.resent = retransmit
	s.timerResent = 0
	if !retransmit {
		s.firstSentAt = s.sentAt
	}
	if s.oackPending {
		if retransmit {
			s.retransmitted(1, res)
			s.timerResent = 1
		}
		return s.c.WriteTo(s.oack, s.peer)
	}
	from, to := s.w.next()
	if from <= s.highWater {
		k := min(to, s.highWater) - from + 1
		s.retransmitted(k, res)
		s.resent = true
		if retransmit {
			s.timerResent = k
		}
	}
	s.highWater = max(s.highWater, to)
	return s.sendBlocks(from, to, res)
}

func (s *readSession) retransmitted(k uint64, res *result) {
	s.counters.Retransmits.Add(k)
	res.Retransmits += k
	s.prog.retransmits.Store(res.Retransmits)
}

// onTimeout answers the retransmission timer: give up (docs/protocols.md
// §3.4 rule 6), or resend from after the last acknowledged block (rule 3).
func (s *readSession) onTimeout(res *result) (done bool, err error) {
	s.timeouts++
	now := time.Now()
	if !s.timing.giveUp(s.timeouts, s.heard, now.Sub(s.progress)) {
		s.est.Timeout()
		return false, s.send(true, res)
	}
	w := &s.w
	if s.heard && !s.oackPending && w.sent == w.final && w.acked+w.size >= w.final {
		// The peer took every window but the last, and the last went
		// out: only the final ACK is missing.
		res.Outcome = OutcomeUnconfirmed
		res.Bytes, res.Blocks = s.size, w.final
		return true, nil
	}
	res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no answer after %d retries in %s", s.timeouts-1, now.Sub(s.progress).Round(time.Millisecond))
	res.Bytes, res.Blocks = int64(w.acked)*int64(s.neg.BlockSize), w.acked
	return true, nil
}

// onPacket takes a datagram from the peer.
func (s *readSession) onPacket(pkt []byte, res *result) (done bool, err error) {
	switch PacketOpcode(pkt) {
	case OpACK:
		wire, err := ParseAck(pkt)
		if err != nil {
			s.counters.BadPacket.Add(1)
			return false, nil
		}
		if s.oackPending {
			return s.onOACKAck(wire, res)
		}
		return s.onAck(wire, res)
	case OpERROR:
		s.heard = true
		code, msg, _ := ParseError(pkt)
		res.Err = &RemoteError{Code: code, Message: msg}
		res.Outcome = OutcomeAborted
		if s.oackPending && s.neg.TSizeAsked {
			// EDK2/EFI size probe: RRQ tsize=0, read the OACK, ERROR 8.
			res.Outcome = OutcomeProbe
		}
		res.Bytes, res.Blocks = int64(s.w.acked)*int64(s.neg.BlockSize), s.w.acked
		return true, nil
	}
	s.counters.BadPacket.Add(1)
	return false, nil
}

// onOACKAck takes an ACK while the OACK is outstanding: ACK 0 starts
// window 1 (docs/protocols.md §3.4 rule 5); any other is stale.
func (s *readSession) onOACKAck(wire uint16, res *result) (done bool, err error) {
	if wire != 0 {
		s.counters.DupAck.Add(1)
		return false, nil
	}
	if !s.confirmed(res) {
		return true, nil
	}
	s.oackPending = false
	s.sample()
	s.moved()
	return false, s.send(false, res)
}

// onAck takes an ACK of a block: the window decides (tftp/window.go).
func (s *readSession) onAck(wire uint16, res *result) (done bool, err error) {
	blk, ok := unwrapBlock(wire, s.w.acked, s.w.sent, s.neg.Rollover)
	if !ok {
		s.counters.DupAck.Add(1)
		return false, nil
	}
	switch s.w.onAck(blk) {
	case ackStale:
		s.counters.DupAck.Add(1)
		return false, nil
	case ackDone:
		s.heard = true
		res.Outcome = OutcomeOK
		res.Bytes, res.Blocks = s.size, s.w.final
		return true, nil
	case ackGap:
		s.counters.GapAck.Add(1)
	case ackWindow:
		s.sample()
	}
	if !s.confirmed(res) {
		return true, nil
	}
	s.moved()
	s.prog.bytes.Store(min(int64(s.w.acked)*int64(s.neg.BlockSize), s.size))
	return false, s.send(false, res)
}

// sample feeds the estimator the round trip of the window (or OACK) just
// acknowledged: when it went out once (Karn's rule), or when the timer
// resent it and the answer came too soon to answer the resend
// (rto.Estimator.Spurious): then the answer is the first copy's, its
// round trip (the stall that fooled the timer) is sampled, and the
// resend is counted as spurious.
func (s *readSession) sample() {
	now := time.Now()
	switch {
	case !s.resent:
		s.est.Sample(now.Sub(s.sentAt))
	case s.timerResent > 0 && s.est.Spurious(now.Sub(s.sentAt)):
		s.counters.Spurious.Add(s.timerResent)
		s.est.Sample(now.Sub(s.firstSentAt))
	}
	s.timerResent = 0
}

// answered looks, when the timer has run out, whether the peer's answer
// is waiting all the same (a server starved of CPU runs its timers and
// reads its socket late, both at once): then it is taken (n bytes in
// rbuf) instead of resending. The look waits at most lateAnswerWait.
func (s *readSession) answered(wait *sessionWait) (int, bool) {
	s.c.SetReadDeadline(time.Now().Add(lateAnswerWait))
	n, from, err := s.c.ReadFrom(s.rbuf)
	if err != nil {
		return 0, false
	}
	if from != s.peer {
		wait.strangers(from)
		return 0, false
	}
	s.counters.LateAnswers.Add(1)
	return n, true
}

// lateAnswerWait is how long answered waits: a read deadline already past
// fails without reading, so it must lie ahead; 1 ms is far below any
// RTO floor and costs a lossy transfer 1 ms per timeout.
const lateAnswerWait = time.Millisecond

// confirmed confirms the request when the peer first answers; false ends
// the session, its result set (notConfirmed).
func (s *readSession) confirmed(res *result) bool {
	if s.heard || s.confirm == nil {
		return true
	}
	if err := s.confirm(); err != nil {
		s.notConfirmed(s.c, s.peer, res, err)
		return false
	}
	return true
}

// moved records that the peer moved the transfer on.
func (s *readSession) moved() {
	s.heard, s.progress = true, time.Now()
	s.timeouts = 0
	s.est.Progress()
}

// preAckRetries bounds what an unverified request can buy: until the peer
// ACKs something, the source address may be spoofed, so the first window
// (or OACK) is sent at most this many more times (amplification, and a
// spoofed request must not hold a session slot for a minute: with the
// default RTOs it is released after 1+2+4+8+8 = 23 s). Four retries still
// get through 20 % loss each way 99.4 % of the time (1 − 0.36^5).
const preAckRetries = 4

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
