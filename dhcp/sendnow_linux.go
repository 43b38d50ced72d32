package dhcp

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// sendBuf is the DHCP sockets' SO_SNDBUF. An answer to an address on the
// link waits in the kernel, charged to this buffer, until neighbour
// discovery (or ARP) for it resolves or gives up: 3 solicitations 1 s
// apart (RFC 4861 §10, MAX_MULTICAST_SOLICIT × RETRANS_TIMER; ARP's
// defaults are the same). Requests from forged sources (DHCPv6
// link-local sources, DHCPv4 ciaddr/giaddr) keep ~3 s worth of answers
// there, ~830 bytes each for an Advertise (measured: tx_queue in
// /proc/net/udp6 with 600 waiting, TestNetnsDHCPv6ForgedSourceFlood). The
// kernel's default (212992 bytes) held ~250: 85 forged Solicits a second
// filled it (docs/security.md, "DHCPv6"). The kernel doubles what is set
// (socket(7)): 8 MiB holds ~10000, well past its own limit on unresolved
// neighbours (gc_thresh3, 1024 entries host-wide; past it the kernel
// drops the answer at once) even for answers twice as big.
const sendBuf = 4 << 20

// setSendBuf raises c's send buffer to sendBuf: SO_SNDBUFFORCE first
// (root or CAP_NET_ADMIN; the sockets open before privileges drop), then
// SO_SNDBUF, which the kernel caps at net.core.wmem_max. A smaller buffer
// is no error: sends past it are dropped, never waited for (sendNow).
func setSendBuf(c net.PacketConn) {
	if rc := rawConn(c); rc != nil {
		rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuf) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuf)
			}
		})
	}
}

func rawConn(c net.PacketConn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// sendNow sends b to sa with control data oob without ever waiting
// (MSG_DONTWAIT): with the send buffer full it fails with errSendFull at
// once. A plain WriteTo would park the read loop (or the commit
// goroutine) until the kernel freed room, which forged sources can put
// off for as long as they keep sending.
func sendNow(rc syscall.RawConn, b, oob []byte, sa unix.Sockaddr) error {
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendmsg(int(fd), b, oob, sa, unix.MSG_DONTWAIT)
			if serr != unix.EINTR {
				return true // never wait for room: EAGAIN is a drop
			}
		}
	}); err != nil {
		return err
	}
	if serr == unix.EAGAIN {
		return fmt.Errorf("%w (%d bytes)", errSendFull, len(b))
	}
	return serr
}

// writeNow sends a DHCPv6 answer out of interface ifidx (sendNow).
func (k *sock6) writeNow(b []byte, ifidx int, dst *net.UDPAddr) error {
	cm := &ipv6.ControlMessage{IfIndex: ifidx}
	rc := rawConn(k.c)
	if rc == nil {
		_, err := k.pc.WriteTo(b, cm, dst)
		return err
	}
	sa := &unix.SockaddrInet6{Port: dst.Port, ZoneId: uint32(ifidx)}
	copy(sa.Addr[:], dst.IP.To16())
	return sendNow(rc, b, cm.Marshal(), sa)
}

// writeNow sends a DHCPv4 reply with control data cm (nil: none)
// (sendNow).
func (k *sock) writeNow(b []byte, cm *ipv4.ControlMessage, dst *net.UDPAddr) error {
	rc, ip4 := rawConn(k.c), dst.IP.To4()
	if rc == nil || ip4 == nil {
		_, err := k.pc.WriteTo(b, cm, dst)
		return err
	}
	sa := &unix.SockaddrInet4{Port: dst.Port}
	copy(sa.Addr[:], ip4)
	var oob []byte
	if cm != nil {
		oob = cm.Marshal()
	}
	return sendNow(rc, b, oob, sa)
}
