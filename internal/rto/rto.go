// Package rto is the adaptive retransmission timer RFC 1123 §4.2.3.2 asks
// of TFTP, computed the TCP way (RFC 6298: SRTT/RTTVAR, gains 1/8 and 1/4),
// with doubling backoff inside [min, max]. Unicast transfers, the client
// and the multicast sessions all use it. Pure: no clocks, no I/O.
//
// Karn's rule is the caller's: sample only round trips of packets that
// were sent once.
package rto

import "time"

// Estimator is one peer's timer. Not safe for concurrent use.
type Estimator struct {
	srtt, rttvar      time.Duration
	sampled           bool
	initial, min, max time.Duration
	backoff           uint // consecutive timeouts; the RTO doubles with each
}

// New returns an Estimator that answers initial until the first sample.
func New(initial, min, max time.Duration) Estimator {
	return Estimator{initial: initial, min: min, max: max}
}

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
		e.srtt, e.rttvar, e.sampled = rtt, rtt/2, true
	} else {
		d := e.srtt - rtt
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + rtt) / 8
	}
	e.backoff = 0
}

// Progress clears the backoff after an answer that moved things on, even
// when Karn's rule forbids sampling its round trip.
func (e *Estimator) Progress() { e.backoff = 0 }

// Timeout records an expiry: the next RTO doubles, up to max.
func (e *Estimator) Timeout() { e.backoff++ }

// RTO is the current timeout including backoff, within [min, max].
func (e *Estimator) RTO() time.Duration {
	base := e.initial
	if e.sampled {
		base = e.srtt + 4*e.rttvar
	}
	base = max(base, e.min)
	for i := uint(0); i < e.backoff && base < e.max; i++ {
		base *= 2
	}
	return min(base, e.max)
}
