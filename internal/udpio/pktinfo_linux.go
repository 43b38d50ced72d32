package udpio

import (
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pktinfoControl builds the cmsg that sets a datagram's source address:
// in_pktinfo.ipi_spec_dst (ip(7)) for IPv4 on an AF_INET socket, in6_pktinfo
// (ipv6(7), RFC 3542 §6) otherwise.
func (c *Conn) pktinfoControl(src netip.Addr) []byte {
	return c.pktinfoInto(c.sys.woob[:], src)
}

// pktinfoInto builds that cmsg in b (at least 40 bytes: CMSG_SPACE of an
// in6_pktinfo) and returns it, or nil when src cannot be set.
func (c *Conn) pktinfoInto(b []byte, src netip.Addr) []byte {
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if !c.sys.inet6 {
		src = src.Unmap()
		if !src.Is4() {
			return nil // a v6 source cannot be set on an AF_INET socket
		}
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
		pi.Spec_dst = src.As4()
		return b[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)]
	}
	// On an AF_INET6 socket a v4 source is given v4-mapped, also for
	// v4-mapped destinations (net/ipv4/ip_sockglue.c ip_cmsg_send).
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	pi.Addr = src.As16()
	if z := src.Zone(); z != "" {
		// A link-local source leaves by its interface (ReadFrom's zone
		// is its number), or the kernel could not route it.
		if n, err := strconv.Atoi(z); err == nil && n > 0 {
			pi.Ifindex = uint32(n)
		}
	}
	return b[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)]
}

// walkCmsgs calls f for each control message in b (cmsg(3)) without
// allocating, unlike unix.ParseSocketControlMessage.
func walkCmsgs(b []byte, f func(level, typ int32, data []byte)) {
	hl := unix.CmsgLen(0)
	for len(b) >= hl {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hl || l > len(b) {
			return
		}
		f(h.Level, h.Type, b[hl:l])
		next := unix.CmsgSpace(l - hl)
		if next > len(b) {
			return
		}
		b = b[next:]
	}
}
