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

// writeSession receives one file from one client (WRQ). Windowsize is
// honoured as a receiver: ACK the last block of each window, or the last
// block received in order when a gap shows (RFC 7440 §3).
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
}

func (s *writeSession) run(ctx context.Context) (res result) {
	res.Start = time.Now()
	if s.prog == nil {
		s.prog = new(progress)
	}
	est := rto.New(s.timing.InitialRTO, s.timing.MinRTO, s.timing.MaxRTO)
	defer func() { res.End, res.RTO = time.Now(), est.RTO() }()
	committed := false
	defer func() {
		if !committed {
			s.abort()
		}
	}()
	stop := context.AfterFunc(ctx, func() { s.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	bs := s.neg.BlockSize
	win := uint64(s.neg.WindowSize)
	rbuf := make([]byte, bs+HeaderLen+1)
	if s.neg.Timeout > 0 {
		est.LimitMax(s.neg.Timeout)
	}
	var (
		have      uint64 // highest block received in order
		ackedTo   uint64 // highest block we ACKed
		gapAcked  bool   // a gap was already reported for the current position
		sentAt    time.Time
		timeouts  int
		abuf      []byte
		lifetime  time.Time
		progress  = res.Start
		heard     bool      // the peer sent something: not (only) a spoofed request
		confirmBy time.Time // end of the wait for the peer's first DATA
	)
	defer func() { res.Heard = heard }()
	if s.timing.Lifetime > 0 {
		lifetime = res.Start.Add(s.timing.Lifetime)
	}
	if s.timing.ConfirmTimeout > 0 {
		confirmBy = res.Start.Add(s.timing.ConfirmTimeout)
	}
	if evicted(ctx) {
		res.Outcome, res.Err = OutcomeEvicted, errEvicted
		return res
	}
	sendAck := func() {
		sentAt = time.Now()
		if have == 0 && len(s.oack) > 0 {
			s.c.WriteTo(s.oack, s.peer)
			return
		}
		abuf = AppendAck(abuf[:0], wireBlock(have, s.neg.Rollover))
		s.c.WriteTo(abuf, s.peer)
		ackedTo = have
	}
	sendAck()
	for {
		deadline := sentAt.Add(est.RTO())
		if !lifetime.IsZero() && deadline.After(lifetime) {
			deadline = lifetime
		}
		if have == 0 && !confirmBy.IsZero() && deadline.After(confirmBy) {
			deadline = confirmBy
		}
		s.c.SetReadDeadline(deadline)
		if ctx.Err() != nil {
			if evicted(ctx) {
				res.Outcome, res.Err = OutcomeEvicted, errEvicted
				return res
			}
			s.sendError(ErrCodeUndefined, "server shutting down")
			res.Outcome, res.Err = OutcomeShutdown, ctx.Err()
			return res
		}
		n, from, err := s.c.ReadFrom(rbuf)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if !isTimeout(err) {
				res.Outcome, res.Err = OutcomeError, err
				return res
			}
			now := time.Now()
			if !lifetime.IsZero() && !now.Before(lifetime) {
				s.sendError(ErrCodeUndefined, "transfer time limit exceeded")
				res.Outcome, res.Err = OutcomeLifetime, errors.New("session lifetime exceeded")
				return res
			}
			if now.Before(deadline) {
				continue
			}
			s.counters.Timeouts.Add(1)
			timeouts++
			if have == 0 && !confirmBy.IsZero() && !now.Before(confirmBy) {
				res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no DATA within %s (confirm_timeout)", s.timing.ConfirmTimeout)
				return res
			}
			if (have == 0 && timeouts > min(preAckRetries, s.timing.Retries)) ||
				(have > 0 && timeouts > s.timing.Retries && now.Sub(progress) >= s.timing.StallTimeout) {
				res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no DATA after %d retries", s.timing.Retries)
				return res
			}
			est.Timeout()
			s.counters.Retransmits.Add(1)
			res.Retransmits++
			sendAck()
			continue
		}
		if from != s.peer {
			s.unknownTID(from)
			continue
		}
		pkt := rbuf[:n]
		switch PacketOpcode(pkt) {
		case OpDATA:
			wire, payload, _ := ParseData(pkt)
			if len(payload) > bs {
				s.counters.BadPacket.Add(1)
				continue
			}
			blk, ok := unwrapBlock(wire, have, have+win, s.neg.Rollover)
			if !ok || blk == have {
				// A duplicate of a block we hold: the ACK was lost.
				// Answer with our position once per timer period at most.
				if time.Since(sentAt) > est.RTO()/2 {
					sendAck()
				}
				continue
			}
			if blk != have+1 {
				if !gapAcked {
					gapAcked = true
					sendAck()
				}
				continue
			}
			if have == 0 && s.confirm != nil {
				// DATA 1 from the peer: it owns its address.
				if err := s.confirm(); err != nil {
					heard = true
					return s.notConfirmed(s.c, s.peer, &res, err)
				}
			}
			if s.dst == nil {
				dst, err := s.open()
				if err != nil {
					heard = true
					res.Outcome, res.Err = OutcomeError, err
					s.sendError(ErrCodeAccess, "cannot create file")
					return res
				}
				s.dst = dst
			}
			off := int64(have) * int64(bs)
			if s.maxSize > 0 && off+int64(len(payload)) > s.maxSize {
				s.abort()
				s.sendError(ErrCodeDiskFull, errTooLarge.Error())
				res.Outcome, res.Err = OutcomeError, errTooLarge
				return res
			}
			if _, err := s.dst.WriteAt(payload, off); err != nil {
				s.writeFailed(&res, err)
				return res
			}
			have, gapAcked, timeouts, heard = blk, false, 0, true
			progress = time.Now()
			est.Progress()
			s.counters.Received.Add(uint64(len(payload)))
			res.Bytes = off + int64(len(payload))
			res.Blocks = have
			s.prog.bytes.Store(res.Bytes)
			if len(payload) < bs {
				if err := s.dst.Commit(); err != nil {
					s.writeFailed(&res, err)
					return res
				}
				committed = true
				sendAck()
				s.dally(rbuf, est.RTO(), abuf)
				res.Outcome = OutcomeOK
				return res
			}
			if have-ackedTo >= win {
				sendAck()
			}
		case OpERROR:
			heard = true
			code, msg, _ := ParseError(pkt)
			res.Outcome, res.Err = OutcomeAborted, &RemoteError{Code: code, Message: msg}
			return res
		default:
			s.counters.BadPacket.Add(1)
		}
	}
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
func (s *writeSession) unknownTID(from netip.AddrPort) { s.replier.unknownTID(s.c, from, s.counters) }
