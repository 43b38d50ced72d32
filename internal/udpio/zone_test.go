package udpio

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// TestZones: link-local addresses read by this package carry their
// interface index as a decimal zone, other addresses none; a zone naming
// an interface becomes its index, so both read paths compare equal.
func TestZones(t *testing.T) {
	for _, c := range []struct {
		addr  string
		index uint32
		want  string
	}{
		{"fe80::1", 2, "fe80::1%2"},
		{"ff02::1:2", 7, "ff02::1:2%7"},
		{"fe80::1", 0, "fe80::1"},
		{"2001:db8::1", 2, "2001:db8::1"},
		{"192.0.2.1", 2, "192.0.2.1"},
	} {
		if got := scoped(netip.MustParseAddr(c.addr), c.index); got.String() != c.want {
			t.Errorf("scoped(%s, %d) = %s, want %s", c.addr, c.index, got, c.want)
		}
	}
	if zoneIndex("2") != 2 || zoneIndex("eth0") != 0 || zoneIndex("") != 0 {
		t.Error("zoneIndex")
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no interface named lo")
	}
	want := "fe80::1%" + strconv.Itoa(lo.Index)
	for _, in := range []string{"fe80::1%lo", want} {
		if got := NumericZone(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("NumericZone(%s) = %s, want %s", in, got, want)
		}
	}
	if got := NumericZone(netip.MustParseAddr("fe80::1%no-such-if")); got.Zone() != "no-such-if" {
		t.Errorf("an unknown name: %s", got)
	}
}
