package tftp

import (
	"net/netip"
	"sync"
	"time"
)

// DefaultMaxSources bounds the per-source request limiter's table: a flood
// from spoofed random addresses evicts entries instead of growing it.
const DefaultMaxSources = 4096

// SourceLimiter limits requests per client address: a token bucket per
// address, burst requests at once and rate a second after that; a
// request over it should get no answer at all, so a spoofed flood buys
// nothing. It keeps at most DefaultMaxSources addresses and makes room in
// O(1) (sourceLimiter). It is safe for concurrent use, so that a listener
// can use it while a config reload changes its rate. The zero value
// allows everything.
type SourceLimiter struct {
	mu sync.Mutex
	l  sourceLimiter
}

// NewSourceLimiter returns a limiter of rate requests a second per
// address with a burst of burst (0 = twice the rate); rate 0 allows
// everything.
func NewSourceLimiter(rate, burst int) *SourceLimiter {
	l := &SourceLimiter{}
	l.SetRate(rate, burst)
	return l
}

// SetRate changes the rate and burst (as NewSourceLimiter) for the
// requests that follow; the addresses' buckets are kept.
func (l *SourceLimiter) SetRate(rate, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l.rate = float64(rate)
	l.l.burst = float64(orDefault(burst, 2*rate))
}

// Rate is the current rate in requests a second (0: no limit).
func (l *SourceLimiter) Rate() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.l.rate)
}

// Allow takes one token from src's bucket at now, or reports false when
// the bucket is empty.
func (l *SourceLimiter) Allow(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.l.allow(src, now)
}

// sourceLimiter is a token bucket per client IP for requests on the
// listening port. A source may send burst requests at once and rate per
// second after that. It is not safe for concurrent use (SourceLimiter
// wraps it with a mutex).
//
// The table holds at most max sources in a list ordered by last use. A
// new source into a full table takes the place of the least recently
// used one: O(1), one entry looked at (issue 13, finding 13: the table was
// scanned for every new source, 60 µs per spoofed request). That entry has
// been idle longest, so it is the most likely to have refilled (and be
// recreated full anyway); a client that keeps asking, within its limit or
// over it, stays in the table however many spoofed sources pass.
type sourceLimiter struct {
	rate  float64 // tokens per second; <= 0 disables the limiter
	burst float64
	max   int // entries kept; 0 = DefaultMaxSources

	index   map[netip.Addr]int32
	entries []limEntry // list links are indices; grows to max, then reused
	head    int32      // most recently used; -1 when empty
	tail    int32      // least recently used
	probes  uint64     // entries examined to make room (tests read it)
}

type limEntry struct {
	addr       netip.Addr
	tokens     float64
	at         time.Time
	prev, next int32 // -1 = none
}

// allow takes one token from src's bucket at now, or reports false when
// the bucket is empty.
func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	if l.index == nil {
		l.index = make(map[netip.Addr]int32)
		l.head, l.tail = -1, -1
	}
	i, ok := l.index[src]
	if ok {
		e := &l.entries[i]
		if d := now.Sub(e.at); d > 0 {
			e.tokens = min(l.burst, e.tokens+d.Seconds()*l.rate)
			e.at = now
		}
		l.unlink(i)
	} else {
		i = l.slot()
		l.entries[i] = limEntry{addr: src, tokens: l.burst, at: now}
		l.index[src] = i
	}
	l.pushFront(i)
	e := &l.entries[i]
	if e.tokens < 1 {
		return false
	}
	e.tokens--
	return true
}

// slot returns a free entry for a new source, unlinked: a new one while
// the table is below its cap, else the least recently used one's.
func (l *sourceLimiter) slot() int32 {
	limit := l.max
	if limit <= 0 {
		limit = DefaultMaxSources
	}
	if len(l.entries) < limit {
		l.entries = append(l.entries, limEntry{})
		return int32(len(l.entries) - 1)
	}
	l.probes++
	i := l.tail
	delete(l.index, l.entries[i].addr)
	l.unlink(i)
	return i
}

func (l *sourceLimiter) unlink(i int32) {
	e := &l.entries[i]
	if e.prev >= 0 {
		l.entries[e.prev].next = e.next
	} else {
		l.head = e.next
	}
	if e.next >= 0 {
		l.entries[e.next].prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (l *sourceLimiter) pushFront(i int32) {
	e := &l.entries[i]
	e.prev, e.next = -1, l.head
	if l.head >= 0 {
		l.entries[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}
