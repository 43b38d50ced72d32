package tftp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// sessionWait is the wait both server sessions (read and write) do between
// their protocol steps: for the next datagram, until the retransmission
// timer runs out, capped by the session's lifetime and, while the peer is
// unproven, by the end of the wait for its first answer (docs/design.md,
// "Safety rules": bounded time).
type sessionWait struct {
	c         conn
	peer      netip.AddrPort
	strangers func(netip.AddrPort) // answers a datagram from another source (ERROR 5)
	counters  *Counters
	lifetime  time.Time // zero: no lifetime cap
	confirmBy time.Time // zero: no confirm deadline
	confirmIn time.Duration
	awaited   string // what the peer owes, for the confirm timeout's error
	sendError func(ErrorCode, string)
}

// waitEvent is what ended a wait.
type waitEvent int

const (
	waitPacket  waitEvent = iota // a datagram from the peer
	waitTimeout                  // the retransmission timer ran out: counted; the caller resends or gives up
	waitEnd                      // the session is over; its result is set
	waitFailed                   // the read failed: the caller ends the session with the error
	waitWake                     // the caller's own earlier wake-up
)

func newSessionWait(c conn, peer netip.AddrPort, counters *Counters, start time.Time, t timing, awaited string, r *replier) sessionWait {
	w := sessionWait{c: c, peer: peer, counters: counters, confirmIn: t.ConfirmTimeout, awaited: awaited,
		sendError: func(code ErrorCode, msg string) { r.sendError(c, peer, code, msg) },
		strangers: func(from netip.AddrPort) { r.unknownTID(c, from, counters) }}
	if t.Lifetime > 0 {
		w.lifetime = start.Add(t.Lifetime)
	}
	if t.ConfirmTimeout > 0 {
		w.confirmBy = start.Add(t.ConfirmTimeout)
	}
	return w
}

// wakeOnCancel makes a cancel of ctx wake the session's read (its
// deadline moves into the past); the caller defers the stop it returns.
func (w *sessionWait) wakeOnCancel(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { w.c.SetReadDeadline(time.Unix(1, 0)) })
}

// evicted ends a session whose unconfirmed request was evicted before it
// began (slots.go): silently, res set.
func (w *sessionWait) evicted(ctx context.Context, res *result) bool {
	if !evicted(ctx) {
		return false
	}
	res.Outcome, res.Err = OutcomeEvicted, errEvicted
	return true
}

// next waits for a datagram from the peer into buf (a stranger's gets
// ERROR 5) until timer, the retransmission timer, or wake, an earlier
// wake-up of the caller's (zero: none). waitEnd sets res: the context
// ended (evicted: silently; shut down: with an ERROR), the lifetime
// passed (an ERROR), or an unproven peer stayed silent past the confirm
// deadline. A cancel wakes the read (wakeOnCancel).
func (w *sessionWait) next(ctx context.Context, buf []byte, timer, wake time.Time, unproven bool, res *result) (int, waitEvent, error) {
	deadline := w.deadline(timer, wake, unproven)
	for {
		w.c.SetReadDeadline(deadline)
		// Checked after the deadline is set: a cancel from here on moves
		// the deadline into the past and wakes the read.
		if ctx.Err() != nil {
			if evicted(ctx) {
				res.Outcome, res.Err = OutcomeEvicted, errEvicted
				return 0, waitEnd, nil
			}
			w.sendError(ErrCodeUndefined, "server shutting down")
			res.Outcome, res.Err = OutcomeShutdown, ctx.Err()
			return 0, waitEnd, nil
		}
		n, from, err := w.c.ReadFrom(buf)
		if err == nil {
			if from != w.peer {
				w.strangers(from)
				continue
			}
			return n, waitPacket, nil
		}
		if ctx.Err() != nil {
			continue
		}
		if !isTimeout(err) {
			return 0, waitFailed, err
		}
		if ev := w.timedOut(deadline, timer, unproven, res); ev != waitPacket {
			return 0, ev, nil
		}
	}
}

// deadline is when a wait until timer (and wake, if not zero) must end at
// the latest: capped by the lifetime and, while the peer is unproven, by
// the confirm deadline.
func (w *sessionWait) deadline(timer, wake time.Time, unproven bool) time.Time {
	deadline := timer
	if !wake.IsZero() && deadline.After(wake) {
		deadline = wake
	}
	if !w.lifetime.IsZero() && deadline.After(w.lifetime) {
		deadline = w.lifetime
	}
	if unproven && !w.confirmBy.IsZero() && deadline.After(w.confirmBy) {
		deadline = w.confirmBy
	}
	return deadline
}

// timedOut decides what a read timeout at deadline means: the end of the
// lifetime or of the confirm wait (waitEnd), of the retransmission timer
// (waitTimeout), the caller's wake-up (waitWake), or an early wake-up
// (waitPacket: wait on).
func (w *sessionWait) timedOut(deadline, timer time.Time, unproven bool, res *result) waitEvent {
	now := time.Now()
	if !w.lifetime.IsZero() && !now.Before(w.lifetime) {
		w.sendError(ErrCodeUndefined, "transfer time limit exceeded")
		res.Outcome, res.Err = OutcomeLifetime, errors.New("session lifetime exceeded")
		return waitEnd
	}
	if now.Before(deadline) {
		return waitPacket
	}
	if unproven && !w.confirmBy.IsZero() && !now.Before(w.confirmBy) {
		w.counters.Timeouts.Add(1)
		res.Outcome, res.Err = OutcomeTimeout, fmt.Errorf("no %s within %s (confirm_timeout)", w.awaited, w.confirmIn)
		return waitEnd
	}
	if now.Before(timer) {
		return waitWake
	}
	w.counters.Timeouts.Add(1)
	return waitTimeout
}

// giveUp decides after a timeout whether the transfer is dead: more
// consecutive timeouts than allowed and, once the peer has been heard, at
// least StallTimeout of silence, so a firmware stall or a link flap of a
// few seconds does not kill a boot (tftp-hpa waits ~63 s, dnsmasq 120 s).
// Until the peer is heard it may be a spoofed source: preAckRetries.
func (t timing) giveUp(timeouts int, heard bool, silence time.Duration) bool {
	if !heard {
		return timeouts > min(preAckRetries, t.Retries)
	}
	return timeouts > t.Retries && silence >= t.StallTimeout
}
