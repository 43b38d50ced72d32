package tftp

import (
	"net"
	"net/netip"
	"time"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// conn is the narrow edge between a transfer and the network: a real
// udpio.Conn in production, an in-memory lossy network in the state-machine
// tests (which run in virtual time under testing/synctest).
type conn interface {
	// ReadFrom reads one datagram; it returns a net.Error with Timeout()
	// after the read deadline.
	ReadFrom(b []byte) (int, netip.AddrPort, error)
	SetReadDeadline(t time.Time) error
	// WriteDatagrams sends a window (one syscall where the kernel allows)
	// and reports how many syscalls it took.
	WriteDatagrams(dst netip.AddrPort, ds []udpio.Datagram) (int, error)
	WriteTo(b []byte, dst netip.AddrPort) error
	Close() error
}

// udpConn adapts udpio.Conn to conn.
type udpConn struct{ *udpio.Conn }

func (c udpConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, src, _, err := c.Conn.ReadFrom(b)
	return n, src, err
}

func (c udpConn) WriteTo(b []byte, dst netip.AddrPort) error {
	return c.Conn.WriteTo(b, dst, netip.Addr{})
}

// transferSocketBuffer is the SO_SNDBUF/SO_RCVBUF asked for on transfer
// sockets: a 64-block window of 65464-byte blocks is 4 MiB, and default
// buffers overflow with large windows (docs/lab-notes.md, "UDP receive
// buffers").
const transferSocketBuffer = 4 << 20

// dialTransfer opens a transfer socket on an ephemeral port of local (the
// address the request arrived on, so replies leave from it: IP_PKTINFO or
// IPV6_PKTINFO in the listener, docs/protocols.md §1.1), of local's
// family. Without local (no pktinfo: not Linux) it is a wildcard socket
// that reaches either family where the system is dual-stack.
func dialTransfer(local netip.Addr) (conn, error) {
	network, ua := "udp", &net.UDPAddr{}
	if local.IsValid() && !local.IsUnspecified() {
		// A link-local address binds with its zone (the interface the
		// request came in on), which also routes the replies there.
		network, ua.IP, ua.Zone = udpio.Network("udp", local), local.AsSlice(), local.Zone()
	}
	uc, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, err
	}
	c, err := udpio.New(uc, udpio.Options{SndBuf: transferSocketBuffer, RcvBuf: 256 << 10})
	if err != nil {
		uc.Close()
		return nil, err
	}
	return udpConn{c}, nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
