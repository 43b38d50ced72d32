//go:build !linux

package dhcp

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// setSendBuf asks for a larger send buffer (sendnow_linux.go says why).
func setSendBuf(c net.PacketConn) {
	if uc, ok := c.(*net.UDPConn); ok {
		uc.SetWriteBuffer(4 << 20)
	}
}

// writeNow sends a DHCPv6 answer. Outside Linux it may wait for room in
// the send buffer (no MSG_DONTWAIT here); mtftpd's DHCP servers are
// meant for Linux.
func (k *sock6) writeNow(b []byte, ifidx int, dst *net.UDPAddr) error {
	_, err := k.pc.WriteTo(b, &ipv6.ControlMessage{IfIndex: ifidx}, dst)
	return err
}

// writeNow sends a DHCPv4 reply (may wait, as sock6's).
func (k *sock) writeNow(b []byte, cm *ipv4.ControlMessage, dst *net.UDPAddr) error {
	_, err := k.pc.WriteTo(b, cm, dst)
	return err
}
