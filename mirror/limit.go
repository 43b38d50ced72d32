package mirror

import (
	"container/list"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// connLimiter is the mirror's listener: at most max connections at once,
// at most perIP from one client address, and connections that carry no
// request (idle keep-alive, or opened and silent) are shed first.
//
//   - A client address at its perIP cap that opens one more connection
//     loses its own oldest idle one; if it has none (all busy), the new
//     one is refused with a 503. One address cannot fill the server:
//     2,048 idle keep-alive connections from one client used to take
//     every slot and /metrics timed out (issue 13, finding 7).
//   - At max, a new connection replaces the oldest idle one anywhere;
//     Accept waits only while every connection is serving a request.
//
// It hands out *net.TCPConn values unwrapped in their method set:
// net/http sends files with sendfile only when the connection has
// TCPConn's ReadFrom, which x/net/netutil's LimitListener wrapper hides
// (every byte then went through user space: 32 KiB read + write).
type connLimiter struct {
	net.Listener
	max, perIP int
	counters   *Counters

	mu     sync.Mutex
	room   *sync.Cond // signalled when a connection goes idle or closes
	total  int
	byIP   map[netip.Addr]*ipConns
	idle   list.List // *tracked without a request in flight, oldest first
	closed bool
}

// ipConns is one client address's connections.
type ipConns struct {
	n    int
	idle list.List // its idle *tracked, oldest first
}

// tracked is the limiter's record of one connection.
type tracked struct {
	conn     net.Conn // what Accept returned (the wrapper)
	ip       netip.Addr
	idleAt   *list.Element // in connLimiter.idle; nil while a request runs
	idleIP   *list.Element // in ipConns.idle
	released bool
}

func newConnLimiter(ln net.Listener, max, perIP int, c *Counters) *connLimiter {
	l := &connLimiter{Listener: ln, max: max, perIP: perIP, counters: c, byIP: make(map[netip.Addr]*ipConns)}
	l.room = sync.NewCond(&l.mu)
	return l
}

// busyReply is what a connection refused at its address's cap gets
// before it is closed.
const busyReply = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 45\r\n\r\ntoo many connections from your address (503)\n"

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		for l.total >= l.max && l.idle.Len() == 0 && !l.closed {
			l.room.Wait()
		}
		l.mu.Unlock()
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		victims, ok := l.victims(ip)
		l.mu.Unlock()
		if !ok {
			l.counters.ConnsRefused.Add(1)
			refuse(c)
			continue
		}
		for _, v := range victims {
			l.counters.ConnsShed.Add(1)
			v.conn.Close() // releases it
		}
		t := &tracked{ip: ip}
		if tc, ok := c.(*net.TCPConn); ok {
			t.conn = &limitedTCPConn{TCPConn: tc, l: l, t: t}
		} else {
			t.conn = &limitedConn{Conn: c, l: l, t: t}
		}
		l.mu.Lock()
		l.total++
		pc := l.byIP[ip]
		if pc == nil {
			pc = &ipConns{}
			l.byIP[ip] = pc
		}
		pc.n++
		l.setIdle(t) // no request yet: sheddable like an idle one
		l.mu.Unlock()
		return t.conn, nil
	}
}

// victims picks the idle connections to shed so that one more from ip
// fits under both caps: ip's oldest idle one at the per-address cap, then
// the oldest idle one of all at the total cap. false: a cap is full of busy
// connections and the new one is refused. Called with l.mu held.
func (l *connLimiter) victims(ip netip.Addr) ([]*tracked, bool) {
	var victims []*tracked
	if pc := l.byIP[ip]; pc != nil && pc.n >= l.perIP {
		e := pc.idle.Front()
		if e == nil {
			return nil, false
		}
		victims = append(victims, l.unidle(e.Value.(*tracked)))
	}
	if l.total-len(victims) >= l.max {
		e := l.idle.Front()
		if e == nil {
			// Every slot went busy since Accept's wait for room.
			return nil, false
		}
		victims = append(victims, l.unidle(e.Value.(*tracked)))
	}
	return victims, true
}

// Close stops Accept, also one waiting for room.
func (l *connLimiter) Close() error {
	l.mu.Lock()
	l.closed = true
	l.room.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// connState is the http.Server's ConnState hook: it keeps the idle lists.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	var t *tracked
	switch c := c.(type) {
	case *limitedTCPConn:
		t = c.t
	case *limitedConn:
		t = c.t
	default:
		return
	}
	switch st {
	case http.StateActive:
		l.mu.Lock()
		l.unidle(t)
		l.mu.Unlock()
	case http.StateIdle:
		l.mu.Lock()
		if !t.released {
			l.unidle(t)
			l.setIdle(t)
			l.room.Signal()
		}
		l.mu.Unlock()
	case http.StateClosed, http.StateHijacked:
		l.release(t)
	}
}

// setIdle puts t at the back of the idle lists; l.mu is held.
func (l *connLimiter) setIdle(t *tracked) {
	t.idleAt = l.idle.PushBack(t)
	t.idleIP = l.byIP[t.ip].idle.PushBack(t)
}

// unidle takes t off the idle lists (if it is on them); l.mu is held.
func (l *connLimiter) unidle(t *tracked) *tracked {
	if t.idleAt != nil {
		l.idle.Remove(t.idleAt)
		l.byIP[t.ip].idle.Remove(t.idleIP)
		t.idleAt, t.idleIP = nil, nil
	}
	return t
}

// release forgets a closed connection; it may be called more than once.
func (l *connLimiter) release(t *tracked) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.released {
		return
	}
	t.released = true
	l.unidle(t)
	l.total--
	pc := l.byIP[t.ip]
	if pc.n--; pc.n == 0 {
		delete(l.byIP, t.ip)
	}
	l.room.Signal()
}

// refuse answers a connection over its address's cap and closes it. The
// reply is small enough for an empty socket buffer, so the write cannot
// block; the deadline is there anyway.
func refuse(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte(busyReply))
	c.Close()
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{} // a non-TCP listener in tests: one "address"
}

// limitedTCPConn keeps every *net.TCPConn method (ReadFrom: sendfile).
type limitedTCPConn struct {
	*net.TCPConn
	l *connLimiter
	t *tracked
}

func (c *limitedTCPConn) Close() error {
	defer c.l.release(c.t)
	return c.TCPConn.Close()
}

type limitedConn struct {
	net.Conn
	l *connLimiter
	t *tracked
}

func (c *limitedConn) Close() error {
	defer c.l.release(c.t)
	return c.Conn.Close()
}
