package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// rcvBuf is the receive buffer asked for: a 500-client PXE storm arrives
// in bursts aligned to the firmware's retry points (docs/protocols.md §9.11),
// and the default rmem drops part of a burst while the loop works.
const rcvBuf = 1 << 20

// listenUDP opens an IPv4 UDP socket with SO_BROADCAST (replies to
// 255.255.255.255) and, with ifname, SO_BINDTODEVICE (per-interface
// sockets share port 67 without SO_REUSEADDR: the kernel lets sockets
// bound to different devices share a port). SO_REUSEADDR only with reuse:
// proxy mode may share the port with a DHCP server on the same host. In
// server mode a second instance must fail to bind rather than hand out
// addresses beside us from the same lease file.
func listenUDP(ctx context.Context, addr, ifname string, reuse bool) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			if reuse {
				if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
					serr = fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
					return
				}
			}
			if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
				serr = fmt.Errorf("setsockopt SO_BROADCAST: %w", err)
				return
			}
			if ifname != "" {
				if err := unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
					serr = fmt.Errorf("setsockopt SO_BINDTODEVICE %s: %w", ifname, err)
					return
				}
			}
			// Best effort: FORCE needs CAP_NET_ADMIN, the plain one is
			// capped by net.core.rmem_max.
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
				unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
			}
		})
		return errors.Join(err, serr)
	}}
	return lc.ListenPacket(ctx, "udp4", addr)
}

// batchedReads: readBatch takes every datagram queued (up to its
// length), so a batch shorter than that drained the socket (readLoop).
const batchedReads = true

// readBatch reads the datagrams queued on k, at least one, at most
// len(ms), in one recvmmsg; cms[i] is ms[i]'s IP_PKTINFO (zero: none).
func (k *sock) readBatch(ms []ipv4.Message, cms []ipv4.ControlMessage) (int, error) {
	for i := range ms {
		ms[i].OOB = ms[i].OOB[:cap(ms[i].OOB)]
	}
	n, err := k.pc.ReadBatch(ms, 0)
	if err != nil {
		return 0, err
	}
	for i := range ms[:n] {
		cms[i] = ipv4.ControlMessage{}
		if ms[i].NN > 0 {
			cms[i].Parse(ms[i].OOB[:ms[i].NN])
		}
	}
	return n, nil
}
