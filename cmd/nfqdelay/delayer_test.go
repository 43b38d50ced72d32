package main

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder is an accept func that records ids and release times.
type recorder struct {
	mu  sync.Mutex
	ids []uint32
	at  map[uint32]time.Time
	err error
}

func (r *recorder) accept(id uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.ids = append(r.ids, id)
	if r.at == nil {
		r.at = map[uint32]time.Time{}
	}
	r.at[id] = time.Now()
	return nil
}

func (r *recorder) snapshot() ([]uint32, map[uint32]time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids), maps.Clone(r.at)
}

// Timers never fire early, so a release before its delay is a bug, not
// timing noise.
func TestDelayerNeverEarly(t *testing.T) {
	var r recorder
	q := newDelayer(r.accept)
	held := map[uint32]time.Time{}
	const n = 20
	for i := range uint32(n) {
		held[i] = time.Now()
		q.hold(i, time.Duration(20+i)*time.Millisecond)
	}
	for range 500 { // bounded: 5 s
		if q.counters().released == n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ids, at := r.snapshot()
	if len(ids) != n {
		t.Fatalf("released %d of %d", len(ids), n)
	}
	for i := range uint32(n) {
		if d := at[i].Sub(held[i]); d < time.Duration(20+i)*time.Millisecond {
			t.Errorf("id %d released after %v, before its delay", i, d)
		}
	}
	if c := q.counters(); c.queued != n || c.released != n || c.held != 0 || c.maxHeld != n {
		t.Errorf("counters %+v", c)
	}
}

func TestDelayerFlush(t *testing.T) {
	var r recorder
	q := newDelayer(r.accept)
	for _, id := range []uint32{5, 3, 4} {
		q.hold(id, time.Hour)
	}
	if ids, _ := r.snapshot(); len(ids) != 0 {
		t.Fatalf("released %v before flush", ids)
	}
	q.flush()
	if ids, _ := r.snapshot(); !slices.Equal(ids, []uint32{3, 4, 5}) {
		t.Errorf("flush released %v, want [3 4 5]", ids)
	}
	q.hold(9, time.Hour) // after flush: at once
	if ids, _ := r.snapshot(); !slices.Equal(ids, []uint32{3, 4, 5, 9}) {
		t.Errorf("after flush: released %v, want [3 4 5 9]", ids)
	}
	if c := q.counters(); c.queued != 4 || c.released != 4 || c.held != 0 || c.maxHeld != 3 {
		t.Errorf("counters %+v", c)
	}
	q.flush() // idempotent
}

func TestDelayerConcurrent(t *testing.T) {
	var r recorder
	q := newDelayer(r.accept)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 250 {
				q.hold(uint32(g*1000+i), time.Duration(i%7)*time.Millisecond)
			}
		})
	}
	wg.Wait()
	time.Sleep(3 * time.Millisecond)
	q.flush() // races with firing timers: each id still goes out exactly once
	ids, _ := r.snapshot()
	slices.Sort(ids)
	if n, distinct := len(ids), len(slices.Compact(slices.Clone(ids))); n != 1000 || distinct != 1000 {
		t.Errorf("released %d ids (%d distinct), want 1000 once each", n, distinct)
	}
}

func TestDelayerSendError(t *testing.T) {
	r := recorder{err: errors.New("boom")}
	q := newDelayer(r.accept)
	q.hold(1, 0)
	q.hold(2, time.Hour)
	q.flush()
	if c := q.counters(); c.queued != 2 || c.released != 0 || c.sendErrs != 2 || c.firstErr == nil {
		t.Errorf("counters %+v", c)
	}
}
