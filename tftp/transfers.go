package tftp

import (
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtftpd/mtftpd/internal/counters"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// RecentTransfers is how many finished transfers Server.Transfers keeps.
const RecentTransfers = 256

// Transfer describes one transfer, running or finished, for status pages
// and metrics. It is a copy: nothing in it changes after it is returned.
type Transfer struct {
	ID          uint64
	Client      netip.AddrPort
	Op          string // "read" or "write"
	File        string
	Size        int64 // bytes on the wire (netascii: converted); -1 = not known (an upload without tsize)
	Bytes       int64 // acknowledged (read) or received (write) so far
	BlockSize   int
	WindowSize  int
	Retransmits uint64
	Start       time.Time
	End         time.Time     // zero while running
	Outcome     Outcome       // "" while running
	RTO         time.Duration // finished transfers: the retransmission timeout at the end
}

// Running reports whether the transfer has not ended yet.
func (t Transfer) Running() bool { return t.End.IsZero() }

// Rate is the transfer's mean rate in bytes per second, up to now for a
// running transfer.
func (t Transfer) Rate(now time.Time) float64 {
	end := t.End
	if end.IsZero() {
		end = now
	}
	if d := end.Sub(t.Start).Seconds(); d > 0 {
		return float64(t.Bytes) / d
	}
	return 0
}

// progress is what a running session publishes about itself: plain
// atomic stores, once per window (reads) or block (writes), on a cache
// line only that session writes. The registry reads it at snapshot time.
type progress struct {
	bytes       atomic.Int64
	retransmits atomic.Uint64
}

// live is a registered running transfer: its fixed description and the
// session's progress.
type live struct {
	t    Transfer
	prog progress
}

// registry tracks running transfers and a ring of recent finished ones.
// Its mutex is taken at transfer start and end and by snapshots, never
// per packet.
type registry struct {
	mu     sync.Mutex
	nextID uint64
	live   map[uint64]*live
	recent [RecentTransfers]Transfer
	head   int // next slot of recent
	n      int // filled slots of recent
	rtos   counters.Durations
}

func (r *registry) start(t Transfer) *live {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live == nil {
		r.live = make(map[uint64]*live)
	}
	r.nextID++
	t.ID = r.nextID
	l := &live{t: t}
	r.live[t.ID] = l
	return l
}

func (r *registry) end(l *live, res result, rto time.Duration) {
	t := l.t
	t.Bytes, t.Retransmits = res.Bytes, res.Retransmits
	t.End, t.Outcome, t.RTO = res.End, res.Outcome, rto
	if rto > 0 {
		r.rtos.Observe(rto)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, t.ID)
	r.recent[r.head] = t
	r.head = (r.head + 1) % len(r.recent)
	r.n = min(r.n+1, len(r.recent))
}

// Transfers returns the running transfers (oldest first) and up to
// RecentTransfers finished ones (newest first). Safe to call at any time.
func (s *Server) Transfers() (running, recent []Transfer) {
	r := &s.transfers
	r.mu.Lock()
	running = make([]Transfer, 0, len(r.live))
	for _, l := range r.live {
		t := l.t
		t.Bytes = l.prog.bytes.Load()
		t.Retransmits = l.prog.retransmits.Load()
		running = append(running, t)
	}
	recent = make([]Transfer, 0, r.n)
	for i := 1; i <= r.n; i++ {
		recent = append(recent, r.recent[(r.head-i+len(r.recent))%len(r.recent)])
	}
	r.mu.Unlock()
	sort.Slice(running, func(i, j int) bool { return running[i].ID < running[j].ID })
	return running, recent
}

// RTOs is the histogram of the retransmission timeout each finished
// transfer ended with: one observation per transfer, never per packet.
func (s *Server) RTOs() counters.DurationsSnapshot { return s.transfers.rtos.Snapshot() }

// Listener reports the listening socket's capabilities and the kernel's
// count of requests dropped on it because its queue was full
// (SO_RXQ_OVFL); zero values before Serve.
func (s *Server) Listener() (caps udpio.Caps, drops uint64) {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return udpio.Caps{}, 0
	}
	return ln.Caps(), ln.Drops()
}
