package rto

import (
	"testing"
	"time"
)

func TestEstimator(t *testing.T) {
	e := New(time.Second, 50*time.Millisecond, 8*time.Second)
	if e.RTO() != time.Second {
		t.Fatal("initial")
	}
	for range 20 {
		e.Sample(2 * time.Millisecond)
	}
	if e.RTO() != 50*time.Millisecond {
		t.Fatalf("floor: %v", e.RTO())
	}
	for range 10 {
		e.Timeout()
	}
	if e.RTO() != 8*time.Second {
		t.Fatalf("backoff cap: %v", e.RTO())
	}
	e.Sample(100 * time.Millisecond)
	if r := e.RTO(); r < 100*time.Millisecond || r > time.Second {
		t.Fatalf("after sample: %v", r)
	}
	e.Timeout()
	e.Progress()
	if r := e.RTO(); r > time.Second {
		t.Fatalf("progress did not clear backoff: %v", r)
	}
	e.LimitMax(10 * time.Millisecond)
	if r := e.RTO(); r != 50*time.Millisecond {
		t.Fatalf("LimitMax below the floor: %v, want the floor", r)
	}
}

// TestFloor walks the floor through sample sequences: it follows twice
// the largest recent sample, forgets it after two windows, and takes the
// shared peak only up to the initial RTO.
func TestFloor(t *testing.T) {
	const ms = time.Millisecond
	steady := func(n int, d time.Duration) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = d
		}
		return s
	}
	stall := append(append(steady(10, ms/5), 60*ms), steady(10, ms/5)...)
	cases := []struct {
		name    string
		samples []time.Duration
		shared  time.Duration // a peak another transfer sampled; 0 = no Shared
		floor   time.Duration
		rto     time.Duration
	}{
		{"idle LAN: the absolute minimum", steady(50, ms/5), 0, 20 * ms, 20 * ms},
		// RFC 6298 alone: srtt+4·rttvar ≈ 60/8+… after ten quick samples
		// is well under the 60 ms stall; the peak keeps 2×60 ms.
		{"one stall: twice the stall", stall, 0, 120 * ms, 120 * ms},
		{"stall outlived by two windows", append(stall, steady(2*PeakWindow, ms/5)...), 0, 20 * ms, 20 * ms},
		{"stall within the older window", append(stall, steady(PeakWindow, ms/5)...), 0, 120 * ms, 120 * ms},
		{"shared stall of the server", steady(50, ms/5), 70 * ms, 140 * ms, 140 * ms},
		{"shared peak capped at the initial RTO", steady(50, ms/5), 5 * time.Second, time.Second, time.Second},
		// One sample: srtt 30 + 4 × rttvar 15 = 90 ms, above 2 × 30.
		{"variance above the floor", []time.Duration{30 * ms}, 0, 60 * ms, 90 * ms},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := New(time.Second, 20*ms, 8*time.Second)
			if c.shared > 0 {
				var sh Shared
				other := New(time.Second, 20*ms, 8*time.Second)
				other.Share(&sh)
				other.Sample(c.shared)
				e.Share(&sh)
			}
			for _, s := range c.samples {
				e.Sample(s)
			}
			if f := e.Floor(); f != c.floor {
				t.Errorf("floor %v, want %v", f, c.floor)
			}
			if r := e.RTO(); r.Round(ms) != c.rto {
				t.Errorf("RTO %v, want %v", r, c.rto)
			}
		})
	}
}

// TestSpurious: an answer sooner than any measured round trip after a
// resend answers the first copy.
func TestSpurious(t *testing.T) {
	e := New(time.Second, 20*time.Millisecond, 8*time.Second)
	if e.Spurious(0) {
		t.Fatal("spurious before any sample")
	}
	for _, d := range []time.Duration{300, 200, 500} {
		e.Sample(d * time.Microsecond)
	}
	for _, c := range []struct {
		since time.Duration
		want  bool
	}{{10 * time.Microsecond, true}, {199 * time.Microsecond, true}, {200 * time.Microsecond, false}, {time.Millisecond, false}} {
		if got := e.Spurious(c.since); got != c.want {
			t.Errorf("Spurious(%v) = %v, want %v", c.since, got, c.want)
		}
	}
}

// TestSharedRotates: the shared peak is forgotten after two windows.
func TestSharedRotates(t *testing.T) {
	var sh Shared
	e := New(time.Second, 0, 8*time.Second)
	e.Share(&sh)
	e.Sample(50 * time.Millisecond)
	for range SharedWindow {
		e.Sample(time.Millisecond)
	}
	if p := sh.Peak(); p != 50*time.Millisecond {
		t.Fatalf("peak after one window %v, want 50ms", p)
	}
	for range SharedWindow {
		e.Sample(time.Millisecond)
	}
	if p := sh.Peak(); p != time.Millisecond {
		t.Fatalf("peak after two windows %v, want 1ms", p)
	}
}
