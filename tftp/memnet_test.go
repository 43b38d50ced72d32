package tftp

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// memNet is an in-memory datagram network for tests in virtual time
// (testing/synctest): every datagram is delivered after latency, unless the
// impairment drops, duplicates or delays (reorders) it. Deterministic for
// a given seed.
type memNet struct {
	mu       sync.Mutex
	rng      *rand.Rand
	ends     map[netip.AddrPort]*memConn
	latency  time.Duration
	loss     float64 // probability a datagram is dropped
	dup      float64 // probability a datagram is delivered twice
	reorder  float64 // probability a datagram is held back by 3 × latency
	drop     func(from, to netip.AddrPort, pkt []byte) bool
	nextPort uint16
}

func newMemNet(seed uint64) *memNet {
	return &memNet{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), ends: map[netip.AddrPort]*memConn{},
		latency: time.Millisecond, nextPort: 40000}
}

func (n *memNet) listen(ip string) *memConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextPort++
	a := netip.AddrPortFrom(netip.MustParseAddr(ip), n.nextPort)
	c := &memConn{net: n, addr: a, inbox: make(chan memPkt, 4096), wake: make(chan struct{}, 1)}
	n.ends[a] = c
	return c
}

type memPkt struct {
	from netip.AddrPort
	b    []byte
}

func (n *memNet) send(from, to netip.AddrPort, b []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	dst := n.ends[to]
	if dst == nil {
		return
	}
	if n.drop != nil && n.drop(from, to, b) {
		return
	}
	if n.rng.Float64() < n.loss {
		return
	}
	copies := 1
	if n.rng.Float64() < n.dup {
		copies = 2
	}
	for range copies {
		d := n.latency
		if n.rng.Float64() < n.reorder {
			d *= 3
		}
		dst.schedule(time.Now().Add(d), memPkt{from, append([]byte(nil), b...)})
	}
}

// schedule queues p for delivery at t. Datagrams due at the same time are
// delivered in the order they were sent (a link is FIFO unless the
// impairment reorders on purpose); each timer delivers everything due.
func (c *memConn) schedule(t time.Time, p memPkt) {
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

type timedPkt struct {
	at time.Time
	p  memPkt
}

// memConn is one endpoint; it implements conn.
type memConn struct {
	net      *memNet
	addr     netip.AddrPort
	inbox    chan memPkt
	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{}
	closed   bool

	qmu   sync.Mutex
	queue []timedPkt
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var errMemClosed = errors.New("use of closed memConn")

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

func (c *memConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		c.mu.Lock()
		dl, closed := c.deadline, c.closed
		c.mu.Unlock()
		if closed {
			return 0, netip.AddrPort{}, errMemClosed
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

func (c *memConn) WriteTo(b []byte, dst netip.AddrPort) error {
	c.net.send(c.addr, dst, b)
	return nil
}

func (c *memConn) WriteDatagrams(dst netip.AddrPort, ds []udpio.Datagram) (int, error) {
	for _, d := range ds {
		c.net.send(c.addr, dst, append(append([]byte(nil), d.Hdr...), d.Payload...))
	}
	return 1, nil
}

func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.net.mu.Lock()
	delete(c.net.ends, c.addr)
	c.net.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}
