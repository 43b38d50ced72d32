package tftp

import "time"

// rtoEstimator is the adaptive retransmission timer RFC 1123 §4.2.3.2 asks
// of TFTP, computed the TCP way (RFC 6298: SRTT/RTTVAR, gains 1/8 and 1/4,
// Karn's rule applied by the caller: only windows sent once are sampled).
type rtoEstimator struct {
	srtt, rttvar time.Duration
	sampled      bool
	min, max     time.Duration
	initial      time.Duration
	backoff      uint // consecutive timeouts; RTO doubles with each
}

func newRTO(initial, min, max time.Duration) rtoEstimator {
	return rtoEstimator{initial: initial, min: min, max: max}
}

// sample feeds one measured ACK round trip and clears the backoff.
func (e *rtoEstimator) sample(rtt time.Duration) {
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

// progress clears the backoff after an ACK that moved the transfer on,
// even when Karn's rule forbids sampling its round trip.
func (e *rtoEstimator) progress() { e.backoff = 0 }

// timeout records an expiry: the next RTO doubles, up to max.
func (e *rtoEstimator) timeout() { e.backoff++ }

// rto is the current timeout including backoff, within [min, max].
func (e *rtoEstimator) rto() time.Duration {
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
