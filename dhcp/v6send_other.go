//go:build !linux

package dhcp

import (
	"net"

	"golang.org/x/net/ipv6"
)

// setSendBuf6 asks for a larger send buffer (v6send_linux.go says why).
func setSendBuf6(c net.PacketConn) {
	if uc, ok := c.(*net.UDPConn); ok {
		uc.SetWriteBuffer(4 << 20)
	}
}

// writeNow sends b. Outside Linux it may wait for room in the send buffer
// (no MSG_DONTWAIT here); mtftpd's DHCP servers are meant for Linux.
func (k *sock6) writeNow(b []byte, ifidx int, dst *net.UDPAddr) error {
	_, err := k.pc.WriteTo(b, &ipv6.ControlMessage{IfIndex: ifidx}, dst)
	return err
}
