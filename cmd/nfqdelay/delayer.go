package main

import (
	"slices"
	"sync"
	"time"
)

// delayer holds packet ids and releases each after its own delay. Safe for
// concurrent use: the reader adds ids, timers release them, flush ends it.
// Every release calls accept with mu held, so verdicts leave one at a time.
type delayer struct {
	accept func(id uint32) error

	mu       sync.Mutex
	held     map[uint32]*time.Timer
	closed   bool
	queued   uint64
	released uint64
	maxHeld  int
	sendErrs uint64
	firstErr error
}

func newDelayer(accept func(id uint32) error) *delayer {
	return &delayer{accept: accept, held: map[uint32]*time.Timer{}}
}

// hold schedules the release of id after d; after flush, or for d <= 0, it
// releases id at once.
func (q *delayer) hold(id uint32, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queued++
	if q.closed || d <= 0 {
		q.release(id)
		return
	}
	if _, dup := q.held[id]; dup {
		return // the kernel never repeats a live id; keep the first timer
	}
	// The timer's function waits for mu, so it sees the map entry.
	q.held[id] = time.AfterFunc(d, func() { q.fire(id) })
	q.maxHeld = max(q.maxHeld, len(q.held))
}

func (q *delayer) fire(id uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.held[id]; !ok {
		return // flushed meanwhile
	}
	delete(q.held, id)
	q.release(id)
}

// release sends the verdict; mu is held.
func (q *delayer) release(id uint32) {
	if err := q.accept(id); err != nil {
		q.sendErrs++
		if q.firstErr == nil {
			q.firstErr = err
		}
		return
	}
	q.released++
}

// flush releases every held id now, in id order, and makes later holds
// immediate.
func (q *delayer) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	ids := make([]uint32, 0, len(q.held))
	for id, t := range q.held {
		t.Stop()
		ids = append(ids, id)
	}
	slices.Sort(ids)
	clear(q.held)
	for _, id := range ids {
		q.release(id)
	}
}

type counters struct {
	queued, released uint64
	held, maxHeld    int
	sendErrs         uint64
	firstErr         error
}

func (q *delayer) counters() counters {
	q.mu.Lock()
	defer q.mu.Unlock()
	return counters{q.queued, q.released, len(q.held), q.maxHeld, q.sendErrs, q.firstErr}
}
