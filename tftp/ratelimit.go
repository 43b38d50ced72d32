package tftp

import (
	"net/netip"
	"time"
)

// DefaultMaxSources bounds the per-source request limiter's table: a flood
// from spoofed random addresses evicts entries instead of growing it.
const DefaultMaxSources = 4096

// sourceLimiter is a token bucket per client IP for requests on the
// listening port. A source may send burst requests at once and rate per
// second after that. It is not safe for concurrent use (the request loop
// is its only caller).
type sourceLimiter struct {
	rate    float64 // tokens per second; <= 0 disables the limiter
	burst   float64
	max     int // entries kept; 0 = DefaultMaxSources
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// allow takes one token from src's bucket at now, or reports false when
// the bucket is empty.
func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	if l.buckets == nil {
		l.buckets = make(map[netip.Addr]*bucket)
	}
	b := l.buckets[src]
	if b == nil {
		l.makeRoom(now)
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[src] = b
	} else if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// makeRoom keeps the table under its cap before an insert: buckets that
// have refilled are dropped first (they would be recreated full anyway);
// if every source is still limited, an arbitrary one goes, so spoofed
// sources can reset someone's bucket but never grow memory.
func (l *sourceLimiter) makeRoom(now time.Time) {
	limit := l.max
	if limit <= 0 {
		limit = DefaultMaxSources
	}
	if len(l.buckets) < limit {
		return
	}
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for a, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, a)
		}
	}
	for a := range l.buckets {
		if len(l.buckets) < limit {
			break
		}
		delete(l.buckets, a)
	}
}
