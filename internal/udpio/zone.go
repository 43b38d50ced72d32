package udpio

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Link-local IPv6 addresses (fe80::/10) mean something only with the
// interface they belong to, their zone (RFC 4007 §11). Every address this
// package reads carries that interface as its index in decimal ("fe80::1%2"),
// the form the kernel gives (sin6_scope_id, ipi6_ifindex) and takes back
// without a lookup; Go's own reads name it ("%eth0"), so those are
// rewritten (NumericZone). Two reads of one peer then compare equal
// whichever path they took, and a reply to it leaves by its interface.

// scoped gives a link-local IPv6 address the zone of interface index.
// It does not allocate once that index's zone has been made (netip
// interns zones; zoneName keeps the strings), so it is free on the hot
// path.
func scoped(a netip.Addr, index uint32) netip.Addr {
	if index == 0 || !a.Is6() || a.Is4In6() || !(a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		return a
	}
	return a.WithZone(zoneName(index))
}

// zoneNames holds the decimal strings of interface indexes below its
// length (32 KiB of pointers): strconv allocates one for 100 and up, and
// container hosts have indexes in the thousands.
var zoneNames [1 << 12]atomic.Pointer[string]

func zoneName(index uint32) string {
	if int(index) >= len(zoneNames) {
		return strconv.FormatUint(uint64(index), 10)
	}
	if p := zoneNames[index].Load(); p != nil {
		return *p
	}
	s := strconv.FormatUint(uint64(index), 10)
	zoneNames[index].Store(&s)
	return s
}

// zoneIndex is the interface index of a decimal zone, 0 for none or a name.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	n, err := strconv.ParseUint(zone, 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}

// zoneCacheTTL bounds how long an interface name's index is trusted: an
// interface deleted and made again gets a new index (Go's own zone cache
// refreshes every 60 s too).
const zoneCacheTTL = time.Minute

var zones struct {
	sync.Mutex
	at    time.Time
	index map[string]string // interface name → index in decimal
}

// NumericZone rewrites a zone that names an interface ("fe80::1%eth0", as
// Go's reads and a user's input give it) to that interface's index
// ("fe80::1%2"), the form this package's addresses carry. Other addresses
// come back unchanged, as does a name no interface has.
func NumericZone(a netip.Addr) netip.Addr {
	z := a.Zone()
	if z == "" || zoneIndex(z) != 0 {
		return a
	}
	zones.Lock()
	defer zones.Unlock()
	idx, ok := zones.index[z]
	if !ok || time.Since(zones.at) > zoneCacheTTL {
		ifs, err := net.Interfaces()
		if err != nil {
			return a
		}
		zones.index, zones.at = make(map[string]string, len(ifs)), time.Now()
		for _, ifi := range ifs {
			zones.index[ifi.Name] = strconv.Itoa(ifi.Index)
		}
		if idx, ok = zones.index[z]; !ok {
			return a
		}
	}
	return a.WithZone(idx)
}

// readAddr is a source address as this package reports it: unmapped (a
// dual-stack socket's IPv4 peers as IPv4) and with a decimal zone.
func readAddr(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(NumericZone(ap.Addr().Unmap()), ap.Port())
}
