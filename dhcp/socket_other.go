//go:build !linux

package dhcp

import (
	"context"
	"errors"
	"net"
)

// listenUDP opens a plain IPv4 UDP socket. Outside Linux there is no
// SO_BINDTODEVICE and no SO_BROADCAST here: Interfaces is refused and
// broadcast replies may fail (counted as SendErrors). mtftpd's DHCP server
// is meant for Linux.
func listenUDP(ctx context.Context, addr, ifname string, reuse bool) (net.PacketConn, error) {
	if ifname != "" {
		return nil, errors.New("binding to an interface needs Linux (SO_BINDTODEVICE)")
	}
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, "udp4", addr)
}
