package mirror

import (
	"net"
	"sync"
)

// limitListener accepts at most n connections at once, like
// x/net/netutil.LimitListener, but hands out *net.TCPConn values
// unwrapped in their method set: net/http sends files with sendfile only
// when the connection has TCPConn's ReadFrom, which netutil's wrapper
// hides (every byte then went through user space: 32 KiB read + write).
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	release := sync.OnceFunc(func() { <-l.sem })
	if tc, ok := c.(*net.TCPConn); ok {
		return &limitedTCPConn{TCPConn: tc, release: release}, nil
	}
	return &limitedConn{Conn: c, release: release}, nil
}

// limitedTCPConn keeps every *net.TCPConn method (ReadFrom: sendfile).
type limitedTCPConn struct {
	*net.TCPConn
	release func()
}

func (c *limitedTCPConn) Close() error {
	defer c.release()
	return c.TCPConn.Close()
}

type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	defer c.release()
	return c.Conn.Close()
}
