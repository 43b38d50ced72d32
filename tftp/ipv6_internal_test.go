package tftp

import (
	"net/netip"
	"testing"
	"time"
)

// TestBlockSizeCapIPv6: blksize is capped at the interface MTU less 52
// bytes of headers for an IPv6 client (40 IPv6 + 8 UDP + 4 TFTP) and 32
// for an IPv4 one, also one that came to a dual-stack socket v4-mapped,
// so DATA is never fragmented (docs/protocols.md §3.2).
func TestBlockSizeCapIPv6(t *testing.T) {
	s := &Server{}
	s.mtus.byAddr = map[netip.Addr]int{
		netip.MustParseAddr("192.0.2.5"):   1500,
		netip.MustParseAddr("2001:db8::5"): 1500,
		netip.MustParseAddr("fe80::5"):     1280,
	}
	s.mtus.at = time.Now().Add(time.Hour) // never refreshed during the test
	for local, want := range map[string]int{
		"192.0.2.5":        1468,
		"::ffff:192.0.2.5": 1468,
		"2001:db8::5":      1448,
		"fe80::5%2":        1228, // zone from IPV6_PKTINFO's ifindex
	} {
		if got := s.limits(netip.MustParseAddr(local)).MaxBlockSize; got != want {
			t.Errorf("request to %s: blksize cap %d, want %d", local, got, want)
		}
	}
}
