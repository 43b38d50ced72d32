//go:build !linux

package dhcp

import (
	"context"
	"errors"
	"net"

	"golang.org/x/net/ipv4"
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

// batchedReads: readBatch takes one datagram at a time, so a batch never
// shows whether more are queued, and the read loop leaves every write
// to the commit goroutine (readLoop).
const batchedReads = false

// readBatch reads one datagram into ms[0] (x/net's batch read needs
// recvmsg, which it does not have everywhere): cms[0] is its IP_PKTINFO
// (zero: none).
func (k *sock) readBatch(ms []ipv4.Message, cms []ipv4.ControlMessage) (int, error) {
	n, cm, src, err := k.pc.ReadFrom(ms[0].Buffers[0])
	if err != nil {
		return 0, err
	}
	ms[0].N, ms[0].Addr, cms[0] = n, src, ipv4.ControlMessage{}
	if cm != nil {
		cms[0] = *cm
	}
	return 1, nil
}
