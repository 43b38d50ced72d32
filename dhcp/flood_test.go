package dhcp

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// TestDiscoverFloodCannotStarvePool: random MACs that only DISCOVER hold
// the whole pool for OfferGrace at most; after that a real client still
// completes DORA (the oldest unanswered offer is reclaimed, counted and
// logged), and a flooder's late REQUEST for a reclaimed address is refused.
func TestDiscoverFloodCannotStarvePool(t *testing.T) {
	var logs bytes.Buffer
	s := newServer(t, func(s *Server) { s.Subnets = s.Subnets[:1]; s.Log = zerolog.New(&logs) })
	rng := rand.New(rand.NewPCG(1, 2))
	randomMAC := func() net.HardwareAddr {
		return net.HardwareAddr{0x02, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
	}
	var flood []*Outgoing
	var floodMACs []net.HardwareAddr
	for range 200 {
		hw := randomMAC()
		if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, hw), inBcast, t0); o != nil {
			flood, floodMACs = append(flood, o), append(floodMACs, hw)
		}
	}
	if len(flood) != 10 || s.Counters.PoolExhausted.Load() != 190 {
		t.Fatalf("flood: %d offers, %d exhausted; want the 10-address pool taken, 190 unanswered", len(flood), s.Counters.PoolExhausted.Load())
	}
	// Within the grace an offer is safe: a real client REQUESTing fast is
	// never robbed.
	if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, t0.Add(time.Second)); o != nil {
		t.Fatalf("offer %v taken back %v after it was made", yiaddr(o), time.Second)
	}
	later := t0.Add(OfferGrace + time.Second)
	ack := dora(t, s, mac(1), inBcast, later)
	if s.Counters.OffersReclaimed.Load() != 1 || !strings.Contains(logs.String(), "DISCOVER flood") {
		t.Fatalf("reclaimed %d, log %q", s.Counters.OffersReclaimed.Load(), logs.String())
	}
	for i, o := range flood {
		if yiaddr(o) != yiaddr(ack) {
			continue
		}
		r := handle(t, s, selecting(t, floodMACs[i], o, inBcast), inBcast, later)
		if r == nil || r.Pkt.MessageType() != dhcpv4.MessageTypeNak {
			t.Fatalf("flooder's REQUEST for the reclaimed %v: %v, want NAK", yiaddr(o), r)
		}
	}
	// The real client's address is bound now: nothing reclaims it.
	for range 20 {
		if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, randomMAC()), inBcast, later.Add(OfferGrace*2)); o != nil && yiaddr(o) == yiaddr(ack) {
			t.Fatalf("a bound lease (%v) was reclaimed", yiaddr(ack))
		}
	}
}

// TestClientIDFloodPerMAC: one MAC cycling client ids gets addresses for
// DefaultMaxPerMAC clients, then no answer (counted, logged); other MACs
// are unaffected, and a client that holds its address keeps renewing.
func TestClientIDFloodPerMAC(t *testing.T) {
	var logs bytes.Buffer
	s := newServer(t, func(s *Server) { s.Log = zerolog.New(&logs) })
	hw := mac(7)
	id := func(i int) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, 0, 0, byte(i >> 8), byte(i)}))
	}
	var first *Outgoing
	got := 0
	for i := range 10 {
		o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, hw, id(i)), inBcast, t0)
		if o == nil {
			continue
		}
		got++
		ack := handle(t, s, selecting(t, hw, o, inBcast, id(i)), inBcast, t0)
		if ack == nil || ack.Pkt.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("client id %d: offered but not ACKed (%v)", i, ack)
		}
		if first == nil {
			first = ack
		}
	}
	if got != DefaultMaxPerMAC || s.Counters.MACLimited.Load() != uint64(10-DefaultMaxPerMAC) ||
		!strings.Contains(logs.String(), "too many client ids on one MAC") {
		t.Fatalf("%d of 10 client ids on one MAC got addresses (want %d), limited %d, log %q",
			got, DefaultMaxPerMAC, s.Counters.MACLimited.Load(), logs.String())
	}
	dora(t, s, mac(8), inBcast, t0) // another machine is served as usual
	renew := build(t, dhcpv4.MessageTypeRequest, hw, id(0), dhcpv4.WithClientIP(first.Pkt.YourIPAddr))
	if o := handle(t, s, renew, inBcast, t0.Add(time.Minute)); o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("RENEW of a held lease under a limited MAC: %v", o)
	}
}

// TestRequestOthersAddress: a client asking for an address leased to
// another (SELECTING with our server id, INIT-REBOOT, RENEW with its
// ciaddr) is NAKed and the lease stays with its holder.
func TestRequestOthersAddress(t *testing.T) {
	s := newServer(t, nil)
	victim := yiaddr(dora(t, s, mac(1), inBcast, t0))
	now := t0.Add(time.Minute)
	for name, req := range map[string]*dhcpv4.DHCPv4{
		"selecting": build(t, dhcpv4.MessageTypeRequest, mac(2), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(victim.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice()))),
		"init-reboot": build(t, dhcpv4.MessageTypeRequest, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(victim.AsSlice()))),
		"renewing":    build(t, dhcpv4.MessageTypeRequest, mac(4), dhcpv4.WithClientIP(victim.AsSlice())),
	} {
		if o := handle(t, s, req, inBcast, now); o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeNak {
			t.Errorf("%s REQUEST for another client's %v: %v, want NAK", name, victim, o)
		}
	}
	// A DISCOVER asking for it (option 50) is offered another address.
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(5), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(victim.AsSlice()))), inBcast, now)
	if o == nil || yiaddr(o) == victim {
		t.Fatalf("DISCOVER asking for a leased address: %v", o)
	}
	for _, l := range s.Leases() {
		if l.IP == victim && l.MAC.String() != mac(1).String() {
			t.Fatalf("%v now leased to %v", victim, l.MAC)
		}
	}
	_ = netip.Addr{}
}
