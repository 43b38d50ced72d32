package counters

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

func TestSnapshot(t *testing.T) {
	var c struct {
		A    atomic.Uint64
		B    atomic.Int64
		skip string
		C    atomic.Uint64
	}
	c.A.Add(3)
	c.B.Add(-2)
	c.C.Add(1 << 40)
	got := Snapshot(&c)
	want := []Value{{"A", 3, false}, {"B", -2, true}, {"C", 1 << 40, false}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

func TestDurations(t *testing.T) {
	var h Durations
	for _, d := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 50 * time.Millisecond, time.Hour} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 5 || s.Sum != time.Hour+54*time.Millisecond {
		t.Fatalf("count %d sum %v, want 5 and 1h0m0.054s", s.Count, s.Sum)
	}
	// ≤1ms: 0 and 1ms; ≤5ms: +3ms; ≤50ms: +50ms; 1h only in +Inf.
	want := map[time.Duration]uint64{time.Millisecond: 2, 2 * time.Millisecond: 2, 5 * time.Millisecond: 3, 50 * time.Millisecond: 4, 16 * time.Second: 4}
	for i, b := range DurationBounds {
		if w, ok := want[b]; ok && s.Cumulative[i] != w {
			t.Errorf("≤%v: %d, want %d", b, s.Cumulative[i], w)
		}
	}
}
