package counters

import (
	"sync/atomic"
	"time"
)

// DurationBounds are the upper bounds of the Durations buckets: roughly
// ×2 steps from 1 ms to 16 s, which covers every retransmission timeout
// the servers use (50 ms floor, 8 s ceiling by default) with room on both
// sides for a configured floor or ceiling.
var DurationBounds = [...]time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
}

// Durations is a histogram of durations over DurationBounds. The zero
// value is ready; Observe and Snapshot are safe to call concurrently and
// take no lock (one atomic add per bucket, sum and count).
type Durations struct {
	buckets [len(DurationBounds) + 1]atomic.Uint64 // the last one is +Inf
	sum     atomic.Int64                           // nanoseconds
}

// Observe counts d.
func (h *Durations) Observe(d time.Duration) {
	i := 0
	for i < len(DurationBounds) && d > DurationBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(int64(d))
}

// DurationsSnapshot is a copy of a Durations.
type DurationsSnapshot struct {
	// Cumulative[i] counts observations ≤ DurationBounds[i] (the
	// Prometheus bucket convention).
	Cumulative [len(DurationBounds)]uint64
	Count      uint64
	Sum        time.Duration
}

// Snapshot copies the histogram. Buckets are read one by one, so an
// Observe running meanwhile may show in some and not others.
func (h *Durations) Snapshot() DurationsSnapshot {
	var s DurationsSnapshot
	var run uint64
	for i := range h.buckets {
		run += h.buckets[i].Load()
		if i < len(DurationBounds) {
			s.Cumulative[i] = run
		}
	}
	s.Count = run
	s.Sum = time.Duration(h.sum.Load())
	return s
}
