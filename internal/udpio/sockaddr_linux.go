package udpio

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// putSockaddr writes ip:port as a sockaddr_in (or sockaddr_in6 for an
// AF_INET6 socket, v4 as v4-mapped, a decimal zone as its scope id,
// zone.go) into sa and returns its length, 0 if ip does not fit the
// family.
func putSockaddr(sa *unix.RawSockaddrInet6, ip net.IP, port int, zone string, inet6 bool) uint32 {
	if !inet6 {
		ip4 := ip.To4()
		if ip4 == nil {
			return 0
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], uint16(port))
		copy(sa4.Addr[:], ip4)
		return unix.SizeofSockaddrInet4
	}
	ip16 := ip.To16()
	if ip16 == nil {
		return 0
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Scope_id: zoneIndex(zone)}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(port))
	copy(sa.Addr[:], ip16)
	return unix.SizeofSockaddrInet6
}

// getSockaddr reads a sockaddr_in or sockaddr_in6 written by the kernel.
func getSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(scoped(netip.AddrFrom16(sa.Addr).Unmap(), sa.Scope_id), port)
	}
	return netip.AddrPort{}
}
