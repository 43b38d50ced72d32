package dhcp

import (
	"context"
	"fmt"
	"sync"
)

// lifecycle is a server's Serve/Shutdown state, the same for Server and
// Server6.
type lifecycle struct {
	life    sync.Mutex    // guards the fields below (and Server.socks)
	ready   chan struct{} // closed once Serve's sockets are open
	stop    chan struct{} // closed by Shutdown
	done    chan struct{} // closed when Serve has returned
	serving bool
	closed  bool
}

// begin marks Serve as running and returns the channel to close once
// its sockets are open; closedErr after Shutdown, an error for a second
// Serve. Serve closes l.done when it returns.
func (l *lifecycle) begin(closedErr error, what string) (chan struct{}, error) {
	l.life.Lock()
	defer l.life.Unlock()
	if l.closed {
		return nil, closedErr
	}
	if l.serving {
		return nil, fmt.Errorf("%s: Serve called twice", what)
	}
	l.serving = true
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	return l.readyChan(), nil
}

// halt stops Serve (closes stop) and waits for it to return until ctx
// is done. It may be called without Serve and more than once.
func (l *lifecycle) halt(ctx context.Context) error {
	l.life.Lock()
	if !l.closed {
		l.closed = true
		if l.stop != nil {
			close(l.stop)
		}
	}
	done := l.done
	l.life.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready returns a channel closed once Serve's sockets are open (it stays
// open if Serve fails before that).
func (l *lifecycle) Ready() <-chan struct{} {
	l.life.Lock()
	defer l.life.Unlock()
	return l.readyChan()
}

// readyChan returns the channel closed when Serve's sockets are open; the
// caller holds l.life.
func (l *lifecycle) readyChan() chan struct{} {
	if l.ready == nil {
		l.ready = make(chan struct{})
	}
	return l.ready
}

// compileOrDefault compiles rules, nil meaning DefaultBootRules().
func compileOrDefault(rules []BootRule) (ruleSet, error) {
	if rules == nil {
		rules = DefaultBootRules()
	}
	return compileRules(rules)
}

// swapRules replaces *dst (guarded by db.mu) with rules compiled; a set
// that does not compile is refused and *dst kept.
func (db *leaseDB) swapRules(dst *ruleSet, rules []BootRule) error {
	rs, err := compileOrDefault(rules)
	if err != nil {
		return err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	*dst = rs
	return nil
}
