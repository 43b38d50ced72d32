package tftp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// ListenReusePort opens n UDP sockets on addr with SO_REUSEPORT, for
// ServeSinglePort: the kernel hashes each client's address and port to
// one of them, so each event loop sees all of its clients' packets. Open
// them before dropping privileges: a reuseport group admits sockets of
// the same user only.
func ListenReusePort(addr netip.AddrPort, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var pcs []*net.UDPConn
	for i := range max(n, 1) {
		pc, err := lc.ListenPacket(context.Background(), udpio.Network("udp", addr.Addr()), addr.String())
		if err != nil {
			for _, c := range pcs {
				c.Close()
			}
			return nil, fmt.Errorf("tftp: socket %d of %d on %s (SO_REUSEPORT): %w", i+1, n, addr, err)
		}
		pcs = append(pcs, pc.(*net.UDPConn))
		if addr.Port() == 0 { // the others join the port the first got
			addr = netip.AddrPortFrom(addr.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	return pcs, nil
}
