// Package rto is the adaptive retransmission timer RFC 1123 §4.2.3.2 asks
// of TFTP, computed the TCP way (RFC 6298: SRTT/RTTVAR, gains 1/8 and 1/4),
// with doubling backoff inside [floor, max]. The floor follows the round
// trips measured (docs/protocols.md §1.7): it is never below twice the
// largest of the recent samples, so a stall that happened recently (a
// CPU-starved server, a garbage collection, a busy firmware) does not make
// the next one a spurious retransmission. Unicast transfers, the client
// and the multicast sessions all use it. Pure: no clocks, no I/O.
//
// Karn's rule is the caller's: sample only round trips of packets that
// were sent once, or whose answer is known to be to the first copy
// (Spurious).
package rto

import (
	"sync/atomic"
	"time"
)

const (
	// PeakWindow is how many samples one half of the peak filter holds:
	// the largest sample is remembered for 32 to 64 samples (two
	// halves, the older dropped when the newer fills, as the windowed
	// max/min filters of Linux's lib/win_minmax.c). At a few hundred
	// round trips a second per lock-step transfer that is a few tenths
	// of a second: several periods of a cgroup CPU limit (100 ms,
	// docs/protocols.md §1.7).
	PeakWindow = 32
	// PeakFactor: the floor is this many times the peak. A stall seen
	// once may come back longer (a throttled cgroup waits for the rest
	// of its period); RFC 8961 §4 asks a timer to err towards waiting.
	PeakFactor = 2
	// SharedWindow is the half-window of Shared in samples: a server
	// takes samples from all its transfers, hundreds of times faster
	// than one.
	SharedWindow = 1024
)

// Estimator is one peer's timer. Not safe for concurrent use.
type Estimator struct {
	srtt, rttvar      time.Duration
	sampled           bool
	initial, min, max time.Duration
	backoff           uint // consecutive timeouts; the RTO doubles with each
	peak              [2]time.Duration
	peakN             int
	minRTT            time.Duration // smallest sample: the quickest any answer comes
	shared            *Shared
}

// New returns an Estimator that answers initial until the first sample.
// min is the absolute floor under the measured one.
func New(initial, min, max time.Duration) Estimator {
	return Estimator{initial: initial, min: min, max: max}
}

// Share makes the estimator feed its samples to sh and keep its floor at
// least PeakFactor times sh's peak (never above the initial RTO: a peer
// that answers slowly on purpose can slow the loss recovery of others at
// most back to the timer every transfer starts with). A server shares one
// among its transfers, so one that has not seen the server's own
// scheduling delay yet still waits it out.
func (e *Estimator) Share(sh *Shared) { e.shared = sh }

// LimitMax lowers the ceiling to d (never below the floor): a client's
// negotiated timeout (RFC 2349) is how long it waits itself, so waiting
// longer only adds to a stall.
func (e *Estimator) LimitMax(d time.Duration) {
	e.max = max(min(e.max, d), e.min)
}

// Sample feeds one measured round trip and clears the backoff.
func (e *Estimator) Sample(rtt time.Duration) {
	if rtt <= 0 {
		rtt = time.Microsecond
	}
	if !e.sampled {
		e.srtt, e.rttvar, e.sampled, e.minRTT = rtt, rtt/2, true, rtt
	} else {
		d := e.srtt - rtt
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + rtt) / 8
		e.minRTT = min(e.minRTT, rtt)
	}
	if e.peakN == PeakWindow {
		e.peak[1], e.peak[0], e.peakN = e.peak[0], 0, 0
	}
	e.peak[0] = max(e.peak[0], rtt)
	e.peakN++
	if e.shared != nil {
		e.shared.observe(rtt)
	}
	e.backoff = 0
}

// Progress clears the backoff after an answer that moved things on, even
// when Karn's rule forbids sampling its round trip.
func (e *Estimator) Progress() { e.backoff = 0 }

// Timeout records an expiry: the next RTO doubles, up to max.
func (e *Estimator) Timeout() { e.backoff++ }

// Spurious reports whether an answer that came sinceResend after a
// retransmission must answer the first copy: it came sooner than any
// round trip measured (RFC 8961 §4's "spurious retransmission"; the
// heuristic of Linux's RACK/F-RTO undo). A starved server resends when
// it runs again and then finds the answer that waited in its socket. The
// caller may then sample the first copy's round trip (it is unambiguous)
// and count the retransmission as spurious.
func (e *Estimator) Spurious(sinceResend time.Duration) bool {
	return e.sampled && sinceResend < e.minRTT
}

// Floor is the smallest RTO now: the absolute minimum, or PeakFactor
// times the largest recent sample of this peer or, shared, of the server.
func (e *Estimator) Floor() time.Duration {
	p := max(e.peak[0], e.peak[1])
	if e.shared != nil {
		p = max(p, min(e.shared.Peak(), e.initial/PeakFactor))
	}
	return max(e.min, PeakFactor*p)
}

// RTO is the current timeout including backoff, within [Floor, max].
func (e *Estimator) RTO() time.Duration {
	base := e.initial
	if e.sampled {
		base = e.srtt + 4*e.rttvar
	}
	base = max(base, e.Floor())
	for i := uint(0); i < e.backoff && base < e.max; i++ {
		base *= 2
	}
	return min(base, e.max)
}

// Shared is the peak filter of many estimators: the largest round trip
// any of them sampled in the last SharedWindow to 2×SharedWindow samples.
// Safe for concurrent use; the zero value is ready. Concurrent samples
// may land in either half around a rotation: the peak is approximate,
// never unbounded.
type Shared struct {
	cur, prev atomic.Int64
	n         atomic.Uint64
}

func (s *Shared) observe(rtt time.Duration) {
	if s.n.Add(1)%SharedWindow == 0 {
		s.prev.Store(s.cur.Swap(0))
	}
	for {
		c := s.cur.Load()
		if int64(rtt) <= c || s.cur.CompareAndSwap(c, int64(rtt)) {
			return
		}
	}
}

// Peak is the largest recent sample.
func (s *Shared) Peak() time.Duration {
	return time.Duration(max(s.cur.Load(), s.prev.Load()))
}
