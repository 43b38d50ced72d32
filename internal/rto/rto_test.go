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
