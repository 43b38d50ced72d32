// Package loglimit rate-limits log lines by kind, so that a flood of
// packets never becomes a flood of log lines: one line of a kind per
// interval gets through, carrying how many were held back since. It is the
// TFTP and PXE MTFTP listeners' version of the DHCP server's limiter
// (dhcp/server.go), with the same 10 s interval.
//
// It never logs by itself and holds no per-client state: the kinds must
// come from a fixed set (code constants), never from a packet.
package loglimit

import (
	"sync"
	"time"
)

// DefaultEvery is the quiet time between two lines of one kind.
const DefaultEvery = 10 * time.Second

// Limiter lets one line of each kind through every Every. It is safe for
// concurrent use; the zero value is ready (Every = DefaultEvery).
type Limiter struct {
	Every time.Duration

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last       time.Time
	suppressed uint64
}

// Allow reports whether a line of kind may be logged at now and, if so,
// how many lines of that kind were held back since the last one. A clock
// that went backwards lets the line through (and restarts the interval).
func (l *Limiter) Allow(k string, now time.Time) (ok bool, suppressed uint64) {
	every := l.Every
	if every <= 0 {
		every = DefaultEvery
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil {
		l.kinds = make(map[string]*kind)
	}
	st := l.kinds[k]
	if st == nil {
		st = &kind{}
		l.kinds[k] = st
	} else if d := now.Sub(st.last); d >= 0 && d < every {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}
