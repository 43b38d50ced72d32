package dhcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Two clients behind one MAC (a bridge that rewrites MACs) with their own
// client ids must not share an address.
func TestSameMACDifferentClientIDs(t *testing.T) {
	s := newServer(t, nil)
	id := func(b byte) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, 0, 0, 0, b}))
	}
	a1 := yiaddr(dora(t, s, mac(9), inBcast, t0, id(1)))
	a2 := yiaddr(dora(t, s, mac(9), inBcast, t0, id(2)))
	if a1 == a2 {
		t.Fatalf("two client ids on one MAC both got %v", a1)
	}
	// The same NIC seen by the PXE ROM (61 = 01+MAC) and then by the OS
	// with a DUID still holds one lease.
	hw := mac(10)
	rom := dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, hw...)))
	b1 := yiaddr(dora(t, s, hw, inBcast, t0, rom))
	b2 := yiaddr(dora(t, s, hw, inBcast, t0, id(3)))
	if b1 != b2 {
		t.Fatalf("one NIC, ROM then OS: %v then %v (want the same lease)", b1, b2)
	}
}

// A RENEW for an address in our prefix but outside our pool, from a client
// we have no record of, belongs to another server: silence, not NAK.
func TestRenewUnknownOutsidePoolSilent(t *testing.T) {
	s := newServer(t, nil)
	r := build(t, dhcpv4.MessageTypeRequest, mac(11), dhcpv4.WithClientIP(netip.MustParseAddr("192.0.2.200").AsSlice()))
	if o := handle(t, s, r, inBcast, t0); o != nil {
		t.Fatalf("replied %v to a partner server's client", o.Pkt.MessageType())
	}
}

// Clients with random MACs cannot grow the lease table without bound.
func TestSweepBoundsTable(t *testing.T) {
	s := newServer(t, func(s *Server) { s.Subnets = s.Subnets[:1] })
	now := t0
	for i := range 200 {
		o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1000+i)), inBcast, now)
		if o != nil && o.Pkt.MessageType() == dhcpv4.MessageTypeOffer {
			handle(t, s, selecting(t, mac(1000+i), o, inBcast), inBcast, now)
		}
		now = now.Add(2 * time.Hour) // every lease (1 h) has lapsed by the next client
	}
	s.mu.Lock()
	n := len(s.leases.byKey)
	s.mu.Unlock()
	if n > 20 {
		t.Fatalf("%d records for a 10-address pool after 200 one-off clients", n)
	}
}
