package udpio

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// isGSOError reports whether a send error means this path cannot do UDP
// GSO: EIO when the device lacks checksum offload (quic-go#3911,
// wireguard-go errShouldDisableUDPGSO), EINVAL for a segment layout the
// kernel refuses.
func isGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}

// gsoControl writes a UDP_SEGMENT cmsg (SOL_UDP, uint16 segment size;
// udp(7)) into b and returns it.
func gsoControl(b []byte, seg int) []byte {
	n := unix.CmsgSpace(2)
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(seg))
	return b
}

// EnableGRO turns on UDP_GRO (udp(7), v5.0): the kernel may hand ReadBatch
// several datagrams of one flow as one buffer, which ReadBatch splits again.
// It reports whether the kernel accepted it.
func (c *Conn) EnableGRO() bool {
	var serr error
	err := c.sys.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	})
	c.sys.gro = err == nil && serr == nil
	return c.sys.gro
}
