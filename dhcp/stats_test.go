package dhcp

import (
	"slices"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestRepliesByArch runs DORA for a BIOS PXE client, a UEFI x64 client
// and a plain client, NAKs one request, and checks the by-architecture
// reply counts and the lease table's arch.
func TestRepliesByArch(t *testing.T) {
	s := newServer(t, nil)
	dora(t, s, mac(1), inBcast, t0, biosPXE()...)
	dora(t, s, mac(2), inBcast, t0, uefiX64()...)
	dora(t, s, mac(3), inBcast, t0)
	// INIT-REBOOT for an address outside the subnet: NAK "wrong network".
	nak := handle(t, s, build(t, dhcpv4.MessageTypeRequest, mac(4), append(uefiX64(),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{198, 51, 100, 9})))...), inBcast, t0.Add(time.Second))
	if nak == nil || nak.Pkt.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST for another network: %v, want NAK", nak)
	}
	got := s.Counters.ByArch()
	want := []ArchCount{
		{"offer", "bios", 1}, {"offer", "uefi64", 1}, {"offer", "none", 1},
		{"ack", "bios", 1}, {"ack", "uefi64", 1}, {"ack", "none", 1},
		{"nak", "uefi64", 1},
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("ByArch() = %v: %v missing", got, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("ByArch() = %v, want exactly %v", got, want)
	}
	arch := map[string]string{}
	for _, l := range s.Leases() {
		arch[l.MAC.String()] = l.Arch
	}
	if arch[mac(1).String()] != "0" || arch[mac(2).String()] != "7" || arch[mac(3).String()] != "" {
		t.Errorf("lease arch by MAC: %v", arch)
	}
}
