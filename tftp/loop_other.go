//go:build !linux

package tftp

import (
	"net"
	"net/netip"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// ListenReusePort opens one UDP socket on addr: SO_REUSEPORT's load
// balancing over sockets is Linux's, so there is one event loop here.
func ListenReusePort(addr netip.AddrPort, _ int) ([]*net.UDPConn, error) {
	pc, err := net.ListenUDP(udpio.Network("udp", addr.Addr()), net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	return []*net.UDPConn{pc}, nil
}
