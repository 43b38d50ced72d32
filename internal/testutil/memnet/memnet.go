// Package memnet is an in-memory, impairable datagram network for tests in
// virtual time (testing/synctest). A datagram to a unicast address reaches
// the endpoint bound there; one to a multicast group reaches every endpoint
// that joined the group. Each is delivered after Latency unless Drop, Loss,
// Dup or Reorder says otherwise, and the whole network is deterministic for
// a seed. Test code only: it must never open a real socket, and only
// _test.go files import it.
package memnet

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// queueLen is an endpoint's receive queue, in datagrams; a full queue drops,
// like a socket buffer. Large enough that no test's window overflows it.
const queueLen = 8192

// firstPort is the port below the ones Listen hands out (an arbitrary
// unprivileged port, away from 69 and the PXE ports tests bind).
const firstPort = 40000

// ErrClosed is returned by ReadFrom on a closed Conn.
var ErrClosed = errors.New("memnet: use of closed Conn")

// Net is the network. Set its impairment fields before the first send; a
// test that changes them later must do so from the goroutine that sends.
type Net struct {
	// Latency delays every datagram (default 1 ms).
	Latency time.Duration
	// Loss is the probability a datagram is dropped, Dup that it is
	// delivered twice, Reorder that a copy is held back by 3 × Latency.
	// Drawn once per receiving endpoint.
	Loss, Dup, Reorder float64
	// Drop, when set, drops the datagrams it returns true for; to is the
	// receiving endpoint's address (for a group, the member's host with
	// the group's port).
	Drop func(from, to netip.AddrPort, pkt []byte) bool

	mu       sync.Mutex
	rng      *rand.Rand
	ends     map[netip.AddrPort]*Conn
	groups   map[netip.AddrPort][]*Conn
	sentTo   map[netip.AddrPort]int
	nextPort uint16
}

// New returns an empty network whose random impairments follow seed.
func New(seed uint64) *Net {
	return &Net{
		Latency:  time.Millisecond,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ends:     map[netip.AddrPort]*Conn{},
		groups:   map[netip.AddrPort][]*Conn{},
		sentTo:   map[netip.AddrPort]int{},
		nextPort: firstPort,
	}
}

// Listen binds a new endpoint on ip and the next free port.
func (n *Net) Listen(ip string) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextPort++
	return n.bindLocked(netip.AddrPortFrom(netip.MustParseAddr(ip), n.nextPort))
}

// Bind binds a new endpoint on a, replacing any endpoint bound there.
func (n *Net) Bind(a netip.AddrPort) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bindLocked(a)
}

func (n *Net) bindLocked(a netip.AddrPort) *Conn {
	c := newConn(n, a)
	n.ends[a] = c
	return c
}

// Join gives host ip an endpoint that receives the datagrams sent to group;
// its own address is ip with the group's port.
func (n *Net) Join(ip string, group netip.AddrPort) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := newConn(n, netip.AddrPortFrom(netip.MustParseAddr(ip), group.Port()))
	c.group = group
	n.groups[group] = append(n.groups[group], c)
	return c
}

// Sent reports how many datagrams were sent to to, delivered or not.
func (n *Net) Sent(to netip.AddrPort) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sentTo[to]
}

// Spoof sends b to to as if from from: a forged source address, as a
// hostile host on the LAN can send. It takes the network lock, so a Drop
// hook must call it from another goroutine.
func (n *Net) Spoof(from, to netip.AddrPort, b []byte) { n.send(from, to, b) }

func (n *Net) send(from, to netip.AddrPort, b []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sentTo[to]++
	var dsts []*Conn
	if to.Addr().IsMulticast() {
		dsts = append(dsts, n.groups[to]...)
	} else if c := n.ends[to]; c != nil {
		dsts = append(dsts, c)
	}
	for _, dst := range dsts {
		if n.Drop != nil && n.Drop(from, dst.addr, b) {
			continue
		}
		// Every draw is made whatever the probabilities, so a seed replays
		// the same outcome for each link when only one impairment changes.
		if n.rng.Float64() < n.Loss {
			continue
		}
		copies := 1
		if n.rng.Float64() < n.Dup {
			copies = 2
		}
		for range copies {
			d := n.Latency
			if n.rng.Float64() < n.Reorder {
				d *= 3
			}
			dst.schedule(time.Now().Add(d), pkt{from, append([]byte(nil), b...)})
		}
	}
}

type pkt struct {
	from netip.AddrPort
	b    []byte
}

type timedPkt struct {
	at time.Time
	p  pkt
}

// Conn is one endpoint. It has the methods of tftp's and mtftp's conn
// interfaces (ReadFrom, WriteTo, WriteDatagrams, SetReadDeadline, Close).
type Conn struct {
	net   *Net
	addr  netip.AddrPort
	group netip.AddrPort // set for a group membership
	inbox chan pkt
	wake  chan struct{}

	mu       sync.Mutex
	deadline time.Time
	closed   bool

	qmu   sync.Mutex
	queue []timedPkt // waiting for their delivery time, oldest first
}

func newConn(n *Net, a netip.AddrPort) *Conn {
	return &Conn{net: n, addr: a, inbox: make(chan pkt, queueLen), wake: make(chan struct{}, 1)}
}

// Addr is the endpoint's own address.
func (c *Conn) Addr() netip.AddrPort { return c.addr }

// schedule queues p for delivery at t. Datagrams due at the same time are
// delivered in the order they were sent (a link is FIFO unless the
// impairment reorders on purpose); each timer delivers everything due.
func (c *Conn) schedule(t time.Time, p pkt) {
	c.qmu.Lock()
	i := len(c.queue)
	for i > 0 && c.queue[i-1].at.After(t) {
		i--
	}
	c.queue = append(c.queue, timedPkt{})
	copy(c.queue[i+1:], c.queue[i:])
	c.queue[i] = timedPkt{t, p}
	c.qmu.Unlock()
	time.AfterFunc(time.Until(t), func() {
		c.qmu.Lock()
		defer c.qmu.Unlock()
		now := time.Now()
		for len(c.queue) > 0 && !c.queue[0].at.After(now) {
			select {
			case c.inbox <- c.queue[0].p:
			default: // a full queue drops, like a socket buffer
			}
			c.queue = c.queue[1:]
		}
	})
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// SetReadDeadline sets the time after which ReadFrom fails with a net.Error
// whose Timeout() is true; zero means never. It wakes a blocked ReadFrom.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	c.poke()
	return nil
}

func (c *Conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ReadFrom reads one datagram into b (truncating it to len(b)).
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		c.mu.Lock()
		dl, closed := c.deadline, c.closed
		c.mu.Unlock()
		if closed {
			return 0, netip.AddrPort{}, ErrClosed
		}
		var timer *time.Timer
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, netip.AddrPort{}, timeoutError{}
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		stop := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case p := <-c.inbox:
			stop()
			return copy(b, p.b), p.from, nil
		case <-expired:
			return 0, netip.AddrPort{}, timeoutError{}
		case <-c.wake:
			stop()
		}
	}
}

// WriteTo sends b to dst; it never fails (an unbound dst loses it).
func (c *Conn) WriteTo(b []byte, dst netip.AddrPort) error {
	c.net.send(c.addr, dst, b)
	return nil
}

// WriteDatagrams sends each datagram (header then payload) to dst and
// reports one "syscall", like a kernel with sendmmsg.
func (c *Conn) WriteDatagrams(dst netip.AddrPort, ds []udpio.Datagram) (int, error) {
	for _, d := range ds {
		c.net.send(c.addr, dst, append(append([]byte(nil), d.Hdr...), d.Payload...))
	}
	return 1, nil
}

// Close unbinds the endpoint (or leaves its group) and fails a blocked
// ReadFrom with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	n := c.net
	n.mu.Lock()
	if c.group.IsValid() {
		g := n.groups[c.group]
		for i, m := range g {
			if m == c {
				n.groups[c.group] = append(g[:i:i], g[i+1:]...)
				break
			}
		}
	} else if n.ends[c.addr] == c {
		delete(n.ends, c.addr)
	}
	n.mu.Unlock()
	c.poke()
	return nil
}
