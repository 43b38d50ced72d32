package dhcp

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// sendBuf6 is the DHCPv6 socket's SO_SNDBUF. An answer to a link-local
// source waits in the kernel, charged to this buffer, until neighbour
// discovery for it resolves or gives up: 3 solicitations 1 s apart
// (RFC 4861 §10, MAX_MULTICAST_SOLICIT × RETRANS_TIMER). Solicits from
// forged sources keep ~3 s worth of Advertises there. The kernel's default
// (212992 bytes) held ~250 of them: 80 forged Solicits a second filled it
// (docs/security.md, DHCPv6). 4 MiB holds more than the kernel's own
// limit on unresolved neighbours (net.ipv6.neigh.default.gc_thresh3, 1024
// entries; past it the kernel refuses the send at once) even at the
// largest skb an Advertise makes (~2.3 KiB truesize for ~1 KiB of reply).
const sendBuf6 = 4 << 20

// setSendBuf6 raises the socket's send buffer to sendBuf6: SO_SNDBUFFORCE
// first (root or CAP_NET_ADMIN; Listen6 runs before privileges drop),
// then SO_SNDBUF, which the kernel caps at net.core.wmem_max. A smaller
// buffer is no error: sends past it are dropped, not waited for.
func setSendBuf6(c net.PacketConn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuf6) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuf6)
		}
	})
}

// writeNow sends b to dst out of interface ifidx without ever waiting
// (MSG_DONTWAIT): with the send buffer full it fails with errSendFull at
// once. A plain WriteTo would park the read loop (or the commit
// goroutine) until the kernel freed room, which forged sources can delay
// for as long as they keep sending.
func (k *sock6) writeNow(b []byte, ifidx int, dst *net.UDPAddr) error {
	sc, ok := k.c.(syscall.Conn)
	if !ok {
		_, err := k.pc.WriteTo(b, &ipv6.ControlMessage{IfIndex: ifidx}, dst)
		return err
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	sa := &unix.SockaddrInet6{Port: dst.Port, ZoneId: uint32(ifidx)}
	copy(sa.Addr[:], dst.IP.To16())
	oob := (&ipv6.ControlMessage{IfIndex: ifidx}).Marshal()
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), b, oob, sa, unix.MSG_DONTWAIT)
		return true // never wait for room: EAGAIN is a drop
	}); err != nil {
		return err
	}
	if serr == unix.EAGAIN {
		return fmt.Errorf("%w (%d bytes to %v)", errSendFull, len(b), dst)
	}
	return serr
}
