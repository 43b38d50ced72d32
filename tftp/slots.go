package tftp

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Defaults of the unconfirmed-request pool (issue 13, finding 5).
const (
	// DefaultMaxUnconfirmed caps requests whose client has not answered
	// yet; a flood from spoofed sources holds at most this many. A real
	// client answers within a round trip, but a room of PXE machines
	// powering on together asks within one: with 256 in all and 64 per
	// /24, 200 clients of one /24 lost 38–41 transfers to eviction in
	// the lab, in both modes (docs/design.md §2.2, docs/benchmarks-storm.md);
	// with 1,024 all 500 of a storm completed. An unconfirmed request
	// costs a goroutine and a socket until confirm_timeout.
	DefaultMaxUnconfirmed = 1024
	// DefaultMaxUnconfirmedPerPrefix caps them per /24 (IPv4) or /64
	// (IPv6): a flood from one subnet evicts its own requests first and
	// leaves the rest of the pool to everyone else. 256: a whole /24 of
	// machines booting at once.
	DefaultMaxUnconfirmedPerPrefix = 256
	// DefaultConfirmTimeout is how long an unconfirmed request may wait
	// for its client's first answer: the first reply sent at 0, 1 and 3 s
	// (RTO 1 s doubling), and the client's own RRQ retries start a new
	// request after it.
	DefaultConfirmTimeout = 5 * time.Second
)

var (
	// errEvicted ends an unconfirmed request whose place was taken by a
	// newer one; it ends without a word (its source may be spoofed).
	errEvicted = errors.New("unconfirmed request evicted to make room")
	// errBusy: every confirmed slot is taken (tftp.max_sessions);
	// errAddressBusy: every slot of the client's address is
	// (tftp.max_per_client).
	errBusy        = errors.New(MsgServerBusy)
	errAddressBusy = errors.New(MsgAddressBusy)
)

// MsgServerBusy and MsgAddressBusy are the texts of the ERROR (code 0)
// that refuses a request for want of a session slot: every slot is taken
// (tftp.max_sessions), or every slot of its client's address
// (tftp.max_per_client). Two texts, so that a client or a load tester can
// say which limit it met; both short, as a reply to a source that has not
// proven its address must be (docs/security.md, "Under a flood").
const (
	MsgServerBusy  = "server busy"
	MsgAddressBusy = "address busy"
)

// IsBusy reports whether err is a server's refusal for want of a session
// slot: either text (a retry later may succeed).
func IsBusy(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Code == ErrCodeUndefined && (re.Message == MsgServerBusy || re.Message == MsgAddressBusy)
}

// slotState is where a request's slot is.
type slotState uint8

const (
	slotPending   slotState = iota // in the unconfirmed pool
	slotConfirmed                  // counted in MaxSessions and MaxPerClient
	slotEvicted                    // evicted; its session is ending
	slotRefused                    // confirmed too late: no room
)

// slot is one request's place: from the request until its session ends.
// Its fields are guarded by Server.mu.
type slot struct {
	peer   netip.AddrPort
	prefix netip.Prefix
	state  slotState
	ctx    context.Context // the session's; cancelled with errEvicted on eviction
	cancel context.CancelCauseFunc
	// links in the pool's list and in its prefix's list, oldest first
	prev, next   *slot
	pprev, pnext *slot
	// answered, once the session has its socket, reports whether a
	// datagram from the client waits there unread: the client has
	// answered, the session has not got round to reading it yet.
	answered func() bool
	refusal  error // slotRefused: which limit (errBusy, errAddressBusy)
}

// pendingPool holds the unconfirmed requests, oldest first, overall and
// per prefix; every operation is O(1).
type pendingPool struct {
	head, tail *slot
	n          int
	prefixes   map[netip.Prefix]*prefixQueue
}

type prefixQueue struct {
	head, tail *slot
	n          int
}

func (p *pendingPool) push(sl *slot) {
	sl.prev, sl.next = p.tail, nil
	if p.tail != nil {
		p.tail.next = sl
	} else {
		p.head = sl
	}
	p.tail = sl
	p.n++
	if p.prefixes == nil {
		p.prefixes = make(map[netip.Prefix]*prefixQueue)
	}
	q := p.prefixes[sl.prefix]
	if q == nil {
		q = &prefixQueue{}
		p.prefixes[sl.prefix] = q
	}
	sl.pprev, sl.pnext = q.tail, nil
	if q.tail != nil {
		q.tail.pnext = sl
	} else {
		q.head = sl
	}
	q.tail = sl
	q.n++
}

func (p *pendingPool) remove(sl *slot) {
	if sl.prev != nil {
		sl.prev.next = sl.next
	} else {
		p.head = sl.next
	}
	if sl.next != nil {
		sl.next.prev = sl.prev
	} else {
		p.tail = sl.prev
	}
	p.n--
	q := p.prefixes[sl.prefix]
	if sl.pprev != nil {
		sl.pprev.pnext = sl.pnext
	} else {
		q.head = sl.pnext
	}
	if sl.pnext != nil {
		sl.pnext.pprev = sl.pprev
	} else {
		q.tail = sl.pprev
	}
	if q.n--; q.n == 0 {
		delete(p.prefixes, sl.prefix)
	}
	sl.prev, sl.next, sl.pprev, sl.pnext = nil, nil, nil, nil
}

// prefixOf is the subnet a request counts against: its /24 for IPv4, its
// /64 for IPv6.
func prefixOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// reserve gives peer's request a slot in the unconfirmed pool, evicting
// the oldest unconfirmed request of its prefix, or else of the pool, when
// either is full. It reports dup when that client TID already has a
// request running, and no slot, with the refusal to send, when the
// server is closing or the client is at its confirmed limits
// (MaxSessions: errBusy, MaxPerClient: errAddressBusy), or when
// MaxSessions + MaxUnconfirmed sessions still run (evicted ones included:
// errBusy).
func (s *Server) reserve(peer netip.AddrPort) (sl *slot, dup bool, refusal error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil, false, errBusy
	}
	if old := s.peers[peer]; old != nil && old.state != slotEvicted {
		return nil, true, nil
	}
	client := peer.Addr()
	maxSessions, maxPending := orDefault(s.MaxSessions, DefaultMaxSessions), orDefault(s.MaxUnconfirmed, DefaultMaxUnconfirmed)
	if err := s.full(client); err != nil {
		return nil, false, err
	}
	// Evicted sessions take a moment to notice and end; a flood faster
	// than that must not grow the goroutines and sockets without bound.
	if s.active.Load() >= int64(maxSessions+maxPending) {
		return nil, false, errBusy
	}
	prefix := prefixOf(client)
	for q := s.pending.prefixes[prefix]; q != nil && q.n >= orDefault(s.MaxUnconfirmedPerPrefix, DefaultMaxUnconfirmedPerPrefix); q = s.pending.prefixes[prefix] {
		s.makeRoom(q.head)
	}
	for s.pending.n >= maxPending {
		s.makeRoom(s.pending.head)
	}
	ctx, cancel := context.WithCancelCause(s.sessCtx)
	sl = &slot{peer: peer, prefix: prefix, ctx: ctx, cancel: cancel}
	s.pending.push(sl)
	s.peers[peer] = sl
	s.active.Add(1)
	s.Counters.Active.Add(1)
	s.Counters.Pending.Add(1)
	s.sessions.Add(1)
	return sl, false, nil
}

// full says which session limit a new transfer from client would pass:
// errBusy, errAddressBusy, or nil. s.mu is held.
func (s *Server) full(client netip.Addr) error {
	switch {
	case s.confirmed >= orDefault(s.MaxSessions, DefaultMaxSessions):
		return errBusy
	case s.perClient[client] >= orDefault(s.MaxPerClient, DefaultMaxPerClient):
		return errAddressBusy
	}
	return nil
}

// makeRoom frees the oldest unconfirmed request of a full list: if its
// client has answered already — its ACK waits unread in the session's
// socket, which under a flood can take the session tens of milliseconds
// to read — it is confirmed (or refused if the confirmed slots are full:
// either way it leaves the pool); otherwise it is evicted. Evicting it
// blindly ended honest transfers mid-way when a flood came from their
// own /24 (docs/security.md, "Under a flood"). s.mu is held.
func (s *Server) makeRoom(oldest *slot) {
	if oldest.answered != nil && oldest.answered() {
		s.confirmLocked(oldest)
		return
	}
	s.evict(oldest)
}

// setAnswered gives a request's slot the way to look at its socket.
func (s *Server) setAnswered(sl *slot, answered func() bool) {
	s.mu.Lock()
	sl.answered = answered
	s.mu.Unlock()
}

// evict ends an unconfirmed request to make room: its session stops
// without sending anything more. s.mu is held.
func (s *Server) evict(sl *slot) {
	s.pending.remove(sl)
	sl.state = slotEvicted
	s.Counters.Pending.Add(-1)
	s.Counters.Evicted.Add(1)
	sl.cancel(errEvicted)
}

// confirm moves a request whose client has answered (it owns its address)
// from the unconfirmed pool to the confirmed slots: errEvicted when it
// was evicted meanwhile, errBusy when the confirmed slots are full.
func (s *Server) confirm(sl *slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirmLocked(sl)
}

// confirmLocked is confirm with s.mu held.
func (s *Server) confirmLocked(sl *slot) error {
	switch sl.state {
	case slotConfirmed:
		return nil
	case slotEvicted:
		return errEvicted
	case slotRefused:
		return sl.refusal
	}
	s.pending.remove(sl)
	s.Counters.Pending.Add(-1)
	client := sl.peer.Addr()
	if err := s.full(client); err != nil {
		sl.state, sl.refusal = slotRefused, err
		return err
	}
	sl.state = slotConfirmed
	s.confirmed++
	s.perClient[client]++
	return nil
}

// release frees a request's slot when its session has ended.
func (s *Server) release(sl *slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch sl.state {
	case slotPending:
		s.pending.remove(sl)
		s.Counters.Pending.Add(-1)
	case slotConfirmed:
		s.confirmed--
		client := sl.peer.Addr()
		if s.perClient[client]--; s.perClient[client] <= 0 {
			delete(s.perClient, client)
		}
	}
	if s.peers[sl.peer] == sl {
		delete(s.peers, sl.peer)
	}
	s.active.Add(-1)
	s.Counters.Active.Add(-1)
	sl.cancel(nil)
}
