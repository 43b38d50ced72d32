package mtftp

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// memNet is an in-memory datagram network with multicast groups, for tests
// in virtual time (testing/synctest): a datagram to a unicast address
// reaches that endpoint, one to a group reaches every endpoint that joined
// it on that port, each after latency unless the loss or drop hook says
// otherwise. Deterministic for a seed.
type memNet struct {
	mu       sync.Mutex
	rng      *rand.Rand
	ends     map[netip.AddrPort]*memConn
	groups   map[netip.AddrPort][]*memConn
	latency  time.Duration
	loss     float64
	drop     func(from, to netip.AddrPort, pkt []byte) bool
	nextPort uint16
	sentTo   map[netip.AddrPort]int // datagrams sent to each destination
}

func newMemNet(seed uint64) *memNet {
	return &memNet{rng: rand.New(rand.NewPCG(seed, 7)), ends: map[netip.AddrPort]*memConn{},
		groups: map[netip.AddrPort][]*memConn{}, sentTo: map[netip.AddrPort]int{},
		latency: time.Millisecond, nextPort: 40000}
}

func (n *memNet) listen(ip string) *memConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextPort++
	return n.bindLocked(netip.AddrPortFrom(netip.MustParseAddr(ip), n.nextPort))
}

func (n *memNet) bindLocked(a netip.AddrPort) *memConn {
	c := &memConn{net: n, addr: a, inbox: make(chan memPkt, 8192), wake: make(chan struct{}, 1)}
	n.ends[a] = c
	return c
}

// joinGroup gives a host an endpoint that receives datagrams sent to group.
func (n *memNet) joinGroup(ip string, group netip.AddrPort) *memConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := &memConn{net: n, addr: netip.AddrPortFrom(netip.MustParseAddr(ip), group.Port()), inbox: make(chan memPkt, 8192),
		wake: make(chan struct{}, 1), group: group}
	n.groups[group] = append(n.groups[group], c)
	return c
}

func (n *memNet) sent(to netip.AddrPort) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sentTo[to]
}

type memPkt struct {
	from netip.AddrPort
	b    []byte
}

func (n *memNet) send(from, to netip.AddrPort, b []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sentTo[to]++
	var dsts []*memConn
	if to.Addr().IsMulticast() {
		dsts = append(dsts, n.groups[to]...)
	} else if c := n.ends[to]; c != nil {
		dsts = append(dsts, c)
	}
	for _, dst := range dsts {
		if n.drop != nil && n.drop(from, dst.addr, b) {
			continue
		}
		if n.rng.Float64() < n.loss {
			continue
		}
		p := memPkt{from, append([]byte(nil), b...)}
		time.AfterFunc(n.latency, func() {
			select {
			case dst.inbox <- p:
			default: // a full queue drops, like a socket buffer
			}
		})
	}
}

// memConn is one endpoint; it implements conn.
type memConn struct {
	net      *memNet
	addr     netip.AddrPort
	group    netip.AddrPort // set for a group membership
	inbox    chan memPkt
	mu       sync.Mutex
	deadline time.Time
	closed   bool
	wake     chan struct{}
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
		var expired <-chan time.Time
		var timer *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, netip.AddrPort{}, timeoutError{}
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		select {
		case p := <-c.inbox:
			if timer != nil {
				timer.Stop()
			}
			return copy(b, p.b), p.from, nil
		case <-expired:
			return 0, netip.AddrPort{}, timeoutError{}
		case <-c.wake:
			if timer != nil {
				timer.Stop()
			}
		}
	}
}

func (c *memConn) WriteTo(b []byte, dst netip.AddrPort) error {
	c.net.send(c.addr, dst, b)
	return nil
}

func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.net.mu.Lock()
	if c.group.IsValid() {
		g := c.net.groups[c.group]
		for i, m := range g {
			if m == c {
				c.net.groups[c.group] = append(g[:i:i], g[i+1:]...)
				break
			}
		}
	} else if c.net.ends[c.addr] == c {
		delete(c.net.ends, c.addr)
	}
	c.net.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}
