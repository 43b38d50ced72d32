package udpio

import (
	"net/netip"
	"testing"
)

// TestScopedNoAlloc: giving a link-local address its zone on the read
// path does not allocate once the zone is interned.
func TestScopedNoAlloc(t *testing.T) {
	a := netip.MustParseAddr("fe80::1")
	var sink netip.Addr
	for _, index := range []uint32{2, 4000} {
		scoped(a, index)
		if n := testing.AllocsPerRun(100, func() { sink = scoped(a, index) }); n != 0 {
			t.Fatalf("interface %d: %v allocations per scoped address", index, n)
		}
	}
	_ = sink
}
