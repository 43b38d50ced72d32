package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// dhcpRcvBuf is the receive buffer asked for: at high concurrency the
// servers' broadcast replies arrive in bursts while the reader works, and
// the default rmem (212 KiB) holds only a few hundred of them.
const dhcpRcvBuf = 4 << 20

var (
	dhcpServers = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), 67)
	dhcpClient  = "0.0.0.0:68"
)

// udpTransport is the storm's real socket: 0.0.0.0:68 bound to one
// interface, sending to 255.255.255.255:67.
type udpTransport struct {
	c *net.UDPConn
}

// openDHCPTransport opens the client socket with SO_BINDTODEVICE(iface)
// (the limited broadcast leaves by that interface only, and only its
// replies come in), SO_BROADCAST and SO_REUSEADDR (a DHCP client of the
// host may hold port 68 too). Binding port 68 and SO_BINDTODEVICE need
// root or CAP_NET_BIND_SERVICE + CAP_NET_RAW.
func openDHCPTransport(ctx context.Context, iface string) (Transport, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("bench: interface %q: %w", iface, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("bench: interface %q is down", iface)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			for _, o := range []struct {
				name string
				opt  int
			}{{"SO_REUSEADDR", unix.SO_REUSEADDR}, {"SO_BROADCAST", unix.SO_BROADCAST}} {
				if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, o.opt, 1); err != nil {
					serr = fmt.Errorf("setsockopt %s: %w", o.name, err)
					return
				}
			}
			if err := unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface); err != nil {
				serr = fmt.Errorf("setsockopt SO_BINDTODEVICE %s: %w", iface, err)
				return
			}
			// Best effort: FORCE needs CAP_NET_ADMIN, the plain one is
			// capped by net.core.rmem_max.
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, dhcpRcvBuf) != nil {
				unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, dhcpRcvBuf)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", dhcpClient)
	if err != nil {
		return nil, fmt.Errorf("bench: listen %s on %s: %w", dhcpClient, iface, err)
	}
	return &udpTransport{c: pc.(*net.UDPConn)}, nil
}

func (t *udpTransport) Send(b []byte) error {
	_, err := t.c.WriteToUDPAddrPort(b, dhcpServers)
	return err
}

func (t *udpTransport) Recv(b []byte) (int, error) {
	n, _, err := t.c.ReadFromUDPAddrPort(b)
	return n, err
}

func (t *udpTransport) Close() error { return t.c.Close() }
