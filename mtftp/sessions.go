package mtftp

import (
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Session describes one running multicast session (or PXE MTFTP pass) for
// status pages. It is a copy: nothing in it changes after it is returned.
type Session struct {
	Dialect   string         // "rfc2090", "pxe", …
	File      string         // the name the file was requested by
	Group     netip.AddrPort // where DATA goes
	BlockSize int
	Size      int64 // file bytes
	Blocks    int   // blocks in the file
	Position  int   // the block sent last
	Sent      uint64
	Repairs   uint64 // blocks sent more than once
	Receivers []Receiver
	Start     time.Time
}

// Receiver is one client known to a session, in arrival order.
type Receiver struct {
	Addr   netip.AddrPort
	Master bool // the client whose ACKs drive the stream
}

// sessionView is what Sessions reads of a running session. The session's
// goroutine writes it: receivers under mu when membership changes (rare),
// the block counters as atomics once per DATA block (no lock per packet).
type sessionView struct {
	desc Session // fixed at start

	mu        sync.Mutex
	receivers []Receiver

	pos, sent, repairs atomic.Uint64
}

// track registers a running session's view; Sessions lists it until
// untrack. Any dialect may use it.
func (s *Server) track(desc Session) *sessionView {
	v := &sessionView{desc: desc}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.views == nil {
		s.views = make(map[*sessionView]struct{})
	}
	s.views[v] = struct{}{}
	return v
}

func (s *Server) untrack(v *sessionView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.views, v)
}

// setReceivers replaces the receiver list (the caller's slice is copied).
func (v *sessionView) setReceivers(r []Receiver) {
	c := append([]Receiver(nil), r...)
	v.mu.Lock()
	v.receivers = c
	v.mu.Unlock()
}

// block records DATA block n going out.
func (v *sessionView) block(n uint16, repair bool) {
	v.pos.Store(uint64(n))
	v.sent.Add(1)
	if repair {
		v.repairs.Add(1)
	}
}

func (v *sessionView) snapshot() Session {
	d := v.desc
	v.mu.Lock()
	d.Receivers = append([]Receiver(nil), v.receivers...)
	v.mu.Unlock()
	d.Position, d.Sent, d.Repairs = int(v.pos.Load()), v.sent.Load(), v.repairs.Load()
	return d
}

// Sessions returns the running sessions and passes, oldest first. Safe to
// call at any time.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	views := make([]*sessionView, 0, len(s.views))
	for v := range s.views {
		views = append(views, v)
	}
	s.mu.Unlock()
	out := make([]Session, 0, len(views))
	for _, v := range views {
		out = append(out, v.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}
