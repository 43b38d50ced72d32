package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/internal/rto"
)

// errTooLarge ends an upload that passed the configured size limit.
var errTooLarge = errors.New("upload exceeds the size limit")

// upload is where a write transfer's bytes go: a temp file that Commit
// renames into place after the last block and Abort removes.
type upload interface {
	io.WriterAt
	Commit() error
	Abort()
}

// writeSession receives one file from one client (WRQ). The receive state
// (receiver, tftp/recv.go) decides what each DATA block means and when an
// ACK goes out, as it does for the client's downloads; run drives it:
// it waits, takes the peer's packets (onPacket, onData), writes the
// blocks in order (deliver) and answers the timers (onTimeout).
type writeSession struct {
	c        conn
	peer     netip.AddrPort
	neg      Negotiated
	oack     []byte
	timing   timing
	counters *Counters
	// open creates the upload's temp file; it is called when the first
	// DATA comes from the peer (its address is not spoofed), so a request
	// alone never creates a file.
	open    func() (upload, error)
	dst     upload    // nil until the first DATA
	maxSize int64     // 0 = no limit
	prog    *progress // where the session publishes its progress; nil = nowhere
	// confirm is called when the first DATA comes (the request was not
	// spoofed); an error ends the session. nil = nothing to confirm.
	confirm func() error
	replier

	// run's state
	est       rto.Estimator
	rx        receiver
	rbuf      []byte
	abuf      []byte
	sentAt    time.Time // when the last ACK (or OACK) went out
	timeouts  int       // consecutive timeouts
	progress  time.Time // last time a block arrived in order
	heard     bool      // the peer sent something: not (only) a spoofed request
	committed bool      // the upload is in place
}

// uploadHoldBytes caps the DATA an upload holds in memory ahead of a gap
// (docs/design.md, "Safety rules": bounded state). Reordering on a path
// moves a datagram a few places, not a window: 256 KiB holds 167 blocks
// of 1468 bytes (each counted with heldBlockCost), or 4 of the largest.
const uploadHoldBytes = 256 << 10

func (s *writeSession) run(ctx context.Context) (res result) {
	res.Start = time.Now()
	if s.prog == nil {
		s.prog = new(progress)
	}
	s.est = s.timing.estimator()
	defer func() { res.End, res.RTO, res.Heard = time.Now(), s.est.RTO(), s.heard }()
	defer func() {
		if !s.committed {
			s.abort()
		}
	}()
	wait := newSessionWait(s.c, s.peer, s.counters, res.Start, s.timing, "DATA", &s.replier)
	defer wait.wakeOnCancel(ctx)()
	s.prepare(res.Start)
	if wait.evicted(ctx, &res) {
		return res
	}
	s.sendAck()
	for {
		// A gap that outlived the reorder hold is reported (RFC 7440;
		// docs/protocols.md §3.4 rule 2) by an ACK of the last block
		// held in order.
		hold := reorderHold(s.est.RTO())
		if s.rx.gapReport(time.Now(), hold) {
			s.sendAck()
		}
		n, ev, err := wait.next(ctx, s.rbuf, s.sentAt.Add(s.est.RTO()), s.rx.gapDue(hold), s.rx.have == 0, &res)
		done := false
		switch ev {
		case waitEnd:
			return res
		case waitFailed:
			res.Outcome, res.Err = OutcomeError, err
			return res
		case waitTimeout:
			done = s.onTimeout(&res)
		case waitPacket:
			done = s.onPacket(s.rbuf[:n], &res)
		}
		if done {
			return res
		}
	}
}

// prepare sets up the receive state, its buffers and the timer.
func (s *writeSession) prepare(start time.Time) {
	bs := s.neg.BlockSize
	s.rx = receiver{size: uint64(s.neg.WindowSize), blksize: bs, rollover: s.neg.Rollover, maxHeld: uploadHoldBytes}
	s.rbuf = make([]byte, bs+HeaderLen+1)
	if s.neg.Timeout > 0 {
		s.est.LimitMax(s.neg.Timeout)
	}
	s.progress = start
}

// sendAck sends an ACK of the last block held in order; before any, the
// OACK stands for ACK 0 (docs/protocols.md §3.4 rule 5).
func (s *writeSession) sendAck() {
	s.sentAt = time.Now()
	wire := s.rx.ack()
	if s.rx.have == 0 && len(s.oack) > 0 {
		s.c.WriteTo(s.oack, s.peer)
		return
	}
	s.abuf = AppendAck(s.abuf[:0], wire)
	s.c.WriteTo(s.abuf, s.peer)
}

// onTimeout answers the retransmission timer: give up (the same rules as
// a read, timing.giveUp), or ACK again where we are.
func (s *writeSession) onTimeout(res *result) (done bool) {
	s.timeouts++
	if s.timing.giveUp(s.timeouts, s.rx.have > 0, time.Since(s.progress)) {
		res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no DATA after %d retries", s.timing.Retries)
		return true
	}
	s.est.Timeout()
	s.counters.Retransmits.Add(1)
	res.Retransmits++
	s.sendAck()
	return false
}

// onPacket takes a datagram from the peer.
func (s *writeSession) onPacket(pkt []byte, res *result) (done bool) {
	switch PacketOpcode(pkt) {
	case OpDATA:
		return s.onData(pkt, res)
	case OpERROR:
		s.heard = true
		code, msg, _ := ParseError(pkt)
		res.Outcome, res.Err = OutcomeAborted, &RemoteError{Code: code, Message: msg}
		return true
	}
	s.counters.BadPacket.Add(1)
	return false
}

// onData takes a DATA packet: the receive state says what it means.
func (s *writeSession) onData(pkt []byte, res *result) (done bool) {
	wire, payload, _ := ParseData(pkt)
	switch v := s.rx.onData(wire, payload, time.Now()); v {
	case dataBad:
		s.counters.BadPacket.Add(1)
	case dataReAck:
		s.sendAck() // our ACK was lost: the sender resent
	case dataDeliver, dataAck, dataFinal:
		if !s.deliver(res) {
			return true
		}
		switch v {
		case dataAck:
			s.sendAck()
		case dataFinal:
			if err := s.dst.Commit(); err != nil {
				s.writeFailed(res, err)
				return true
			}
			s.committed = true
			s.sendAck()
			s.dally(s.rbuf, s.est.RTO(), s.abuf)
			res.Outcome = OutcomeOK
			return true
		}
	}
	return false
}

// deliver writes the blocks the receive state put in order into the
// upload, which the first of them (block 1: the peer owns its address)
// confirms and creates. false ends the session, its result set.
func (s *writeSession) deliver(res *result) bool {
	if s.rx.readyFrom == 1 && !s.start(res) {
		return false
	}
	bs := int64(s.neg.BlockSize)
	for k, p := range s.rx.ready {
		off := int64(s.rx.readyFrom-1+uint64(k)) * bs
		if s.maxSize > 0 && off+int64(len(p)) > s.maxSize {
			s.abort()
			s.sendError(ErrCodeDiskFull, errTooLarge.Error())
			res.Outcome, res.Err = OutcomeError, errTooLarge
			return false
		}
		if _, err := s.dst.WriteAt(p, off); err != nil {
			s.writeFailed(res, err)
			return false
		}
		s.counters.Received.Add(uint64(len(p)))
		res.Bytes = off + int64(len(p))
	}
	s.timeouts, s.heard = 0, true
	s.progress = time.Now()
	s.est.Progress()
	res.Blocks = s.rx.have
	s.prog.bytes.Store(res.Bytes)
	return true
}

// start confirms the request and creates the upload's temp file, when
// block 1 comes from the peer. false ends the session, its result set.
func (s *writeSession) start(res *result) bool {
	if s.confirm != nil {
		if err := s.confirm(); err != nil {
			s.heard = true
			s.notConfirmed(s.c, s.peer, res, err)
			return false
		}
	}
	dst, err := s.open()
	if err != nil {
		s.heard = true
		res.Outcome, res.Err = OutcomeError, err
		s.sendError(ErrCodeAccess, "cannot create file")
		return false
	}
	s.dst = dst
	return true
}

// dally re-ACKs a repeated final DATA for a short while (RFC 1350 §6): our
// final ACK may have been lost, and the client is waiting for it.
func (s *writeSession) dally(rbuf []byte, rto time.Duration, ack []byte) {
	end := time.Now().Add(min(2*rto, time.Second))
	for {
		s.c.SetReadDeadline(end)
		n, from, err := s.c.ReadFrom(rbuf)
		if err != nil {
			return
		}
		if from == s.peer && PacketOpcode(rbuf[:n]) == OpDATA {
			s.c.WriteTo(ack, s.peer)
		}
	}
}

// abort removes the upload's temp file and gives back its quota, once.
// It comes before the ERROR that tells the client: a client that tries
// again at once must find the room free.
func (s *writeSession) abort() {
	if s.dst != nil {
		s.dst.Abort()
		s.dst = nil
	}
}

func (s *writeSession) writeFailed(res *result, err error) {
	res.Outcome, res.Err = OutcomeError, err
	s.abort()
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		s.sendError(ErrCodeDiskFull, "disk full")
		return
	}
	if errors.Is(err, errQuota) {
		s.sendError(ErrCodeDiskFull, errQuota.Error())
		return
	}
	if errors.Is(err, errExists) {
		s.sendError(ErrCodeFileExists, "file already exists")
		return
	}
	s.sendError(ErrCodeUndefined, "write failed")
}

func (s *writeSession) sendError(code ErrorCode, msg string) {
	s.replier.sendError(s.c, s.peer, code, msg)
}
