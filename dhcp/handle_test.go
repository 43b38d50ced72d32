package dhcp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestDORA(t *testing.T) {
	s := newServer(t, nil)
	hw := mac(1)
	offer := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, hw), inBcast, t0)
	if offer == nil {
		t.Fatal("no OFFER")
	}
	ip := yiaddr(offer)
	if ip != netip.MustParseAddr("192.0.2.100") {
		t.Errorf("offered %v, want the first pool address", ip)
	}
	if offer.Dst != bcast68 || offer.IfIndex != 3 {
		t.Errorf("OFFER to %v if %d, want broadcast on if 3 (ciaddr 0, no relay)", offer.Dst, offer.IfIndex)
	}
	o := offer.Pkt.Options
	for code, want := range map[uint8][]byte{
		optMessageType:   {byte(dhcpv4.MessageTypeOffer)},
		optServerID:      srvIP.AsSlice(),
		optSubnetMask:    {255, 255, 255, 0},
		optRouter:        {192, 0, 2, 254},
		optDNS:           {192, 0, 2, 53},
		optDomainName:    []byte("lab.test"),
		optLeaseTime:     be32(3600),
		optRenewalTime:   be32(1800),
		optRebindingTime: be32(3150),
	} {
		if !bytes.Equal(o[code], want) {
			t.Errorf("option %d = %v, want %v", code, o[code], want)
		}
	}
	for _, code := range []uint8{optVendorClass, optVendorSpecif, optBootFile} {
		if _, ok := o[code]; ok {
			t.Errorf("option %d sent to a client that is not netbooting", code)
		}
	}
	if offer.Pkt.BootFileName != "" || isSet(addrOf(offer.Pkt.ServerIPAddr)) {
		t.Errorf("boot fields for a plain client: file %q siaddr %v", offer.Pkt.BootFileName, offer.Pkt.ServerIPAddr)
	}
	if offer.Pkt.TransactionID != (dhcpv4.TransactionID{1, 2, 3, 6}) {
		t.Errorf("xid %v not copied", offer.Pkt.TransactionID)
	}

	ack := handle(t, s, selecting(t, hw, offer, inBcast), inBcast, t0.Add(time.Second))
	if ack == nil || ack.Pkt.MessageType() != dhcpv4.MessageTypeAck || yiaddr(ack) != ip {
		t.Fatalf("REQUEST: %v, want ACK for %v", ack, ip)
	}
	ls := s.Leases()
	if len(ls) != 1 || ls[0].IP != ip || !bytes.Equal(ls[0].MAC, hw) || !ls[0].Expiry.Equal(t0.Add(time.Second+time.Hour)) {
		t.Errorf("Leases() = %+v", ls)
	}
	if s.Counters.Discover.Load() != 1 || s.Counters.Offer.Load() != 1 || s.Counters.Request.Load() != 1 || s.Counters.Ack.Load() != 1 {
		t.Errorf("counters: %+v", s.Counters.Snapshot())
	}
}

func TestOfferChoice(t *testing.T) {
	want50 := func(a string) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(netip.MustParseAddr(a).AsSlice()))
	}
	t.Run("current binding", func(t *testing.T) {
		s := newServer(t, nil)
		ip := yiaddr(dora(t, s, mac(1), inBcast, t0))
		dora(t, s, mac(2), inBcast, t0)
		if got := yiaddr(handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), want50("192.0.2.105")), inBcast, t0)); got != ip {
			t.Errorf("bound client offered %v, want its lease %v", got, ip)
		}
	})
	t.Run("previous binding", func(t *testing.T) {
		s := newServer(t, nil)
		ip := yiaddr(dora(t, s, mac(1), inBcast, t0))
		later := t0.Add(2 * time.Hour) // expired
		dora(t, s, mac(2), inBcast, later)
		if got := yiaddr(handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, later)); got != ip {
			t.Errorf("expired client offered %v, want its previous %v", got, ip)
		}
	})
	t.Run("requested if free", func(t *testing.T) {
		s := newServer(t, nil)
		if got := yiaddr(handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), want50("192.0.2.105")), inBcast, t0)); got.String() != "192.0.2.105" {
			t.Errorf("offered %v, want the requested 192.0.2.105", got)
		}
	})
	t.Run("requested but taken", func(t *testing.T) {
		s := newServer(t, nil)
		ip := yiaddr(dora(t, s, mac(1), inBcast, t0))
		if got := yiaddr(handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2), want50(ip.String())), inBcast, t0)); got == ip {
			t.Errorf("offered %v, which mac(1) holds", got)
		}
	})
	for _, a := range []string{"192.0.2.99", "192.0.2.1", "192.0.2.254", "192.0.2.255", "10.0.0.5"} {
		t.Run("requested outside pool "+a, func(t *testing.T) {
			s := newServer(t, nil)
			if got := yiaddr(handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), want50(a)), inBcast, t0)); got.String() != "192.0.2.100" {
				t.Errorf("offered %v for a request of %s, want the pool's 192.0.2.100", got, a)
			}
		})
	}
}

// Offers reserve their address: a storm of DISCOVERs never gets one
// address twice, and a full pool answers nothing until offers lapse.
func TestTwoClientsNeverShare(t *testing.T) {
	s := newServer(t, nil)
	seen := map[netip.Addr]int{}
	for i := range 10 {
		o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(i)), inBcast, t0)
		if o == nil {
			t.Fatalf("client %d: no offer", i)
		}
		if j, dup := seen[yiaddr(o)]; dup {
			t.Fatalf("clients %d and %d both offered %v", j, i, yiaddr(o))
		}
		seen[yiaddr(o)] = i
	}
	// A retransmitted DISCOVER gets its own offer again.
	if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(3)), inBcast, t0.Add(time.Second)); o == nil || seen[yiaddr(o)] != 3 {
		t.Errorf("retransmitted DISCOVER: %v", o)
	}
	if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(99)), inBcast, t0.Add(time.Second)); o != nil {
		t.Fatalf("11th client offered %v from a pool of 10", yiaddr(o))
	}
	if s.Counters.PoolExhausted.Load() != 1 {
		t.Errorf("PoolExhausted = %d", s.Counters.PoolExhausted.Load())
	}
	// Another client REQUESTing an offered address is refused.
	var held netip.Addr
	for a, i := range seen {
		if i == 4 {
			held = a
		}
	}
	req := build(t, dhcpv4.MessageTypeRequest, mac(98), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(held.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice())))
	if o := handle(t, s, req, inBcast, t0.Add(time.Second)); o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for an address offered to another: %v, want NAK", o)
	}
	// Once the offers lapse, the pool is free again.
	if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(99)), inBcast, t0.Add(OfferHold+2*time.Second)); o == nil {
		t.Error("no offer after the other offers lapsed")
	}
}

func TestRequestStates(t *testing.T) {
	in := inBcast
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	req := func(t *testing.T, hw int, ci netip.Addr, want50, sid netip.Addr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		if ci.IsValid() {
			mods = append(mods, dhcpv4.WithClientIP(ci.AsSlice()))
		}
		if want50.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want50.AsSlice())))
		}
		if sid.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid.AsSlice())))
		}
		return build(t, dhcpv4.MessageTypeRequest, mac(hw), mods...)
	}
	none := netip.Addr{}
	first := a("192.0.2.100") // mac(1)'s lease in every row
	tests := []struct {
		name    string
		req     func(*testing.T) *dhcpv4.DHCPv4
		want    dhcpv4.MessageType // MessageTypeNone: no reply
		wantIP  netip.Addr
		wantDst netip.AddrPort
	}{
		{"selecting ours", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, none, first, srvIP) },
			dhcpv4.MessageTypeAck, first, bcast68},
		{"selecting other server", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, none, first, a("192.0.2.2")) },
			dhcpv4.MessageTypeNone, none, netip.AddrPort{}},
		{"selecting an address leased to another", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 2, none, first, srvIP) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"selecting outside the pool", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 2, none, a("192.0.2.50"), srvIP) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"init-reboot right", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, none, first, none) },
			dhcpv4.MessageTypeAck, first, bcast68},
		{"init-reboot wrong subnet", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, none, a("10.1.2.3"), none) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"init-reboot wrong subnet, unknown client", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 7, none, a("10.1.2.3"), none) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"init-reboot known client, other address", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, none, a("192.0.2.105"), none) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"init-reboot unknown client", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 7, none, a("192.0.2.105"), none) },
			dhcpv4.MessageTypeNone, none, netip.AddrPort{}},
		{"init-reboot unknown client, another's address", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 7, none, first, none) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"renewing", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, first, none, none) },
			dhcpv4.MessageTypeAck, first, netip.AddrPortFrom(first, 68)},
		{"rebinding (broadcast bit)", func(t *testing.T) *dhcpv4.DHCPv4 {
			return req(t, 1, first, none, none, dhcpv4.WithBroadcast(true))
		}, dhcpv4.MessageTypeAck, first, netip.AddrPortFrom(first, 68)},
		{"renewing an address we lost track of, free", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 7, a("192.0.2.106"), none, none) },
			dhcpv4.MessageTypeAck, a("192.0.2.106"), netip.AddrPortFrom(a("192.0.2.106"), 68)},
		{"renewing another's address", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 7, first, none, none) },
			dhcpv4.MessageTypeNak, none, bcast68},
		{"renewing from a network we do not serve", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 7, a("10.9.9.9"), none, none) },
			dhcpv4.MessageTypeNone, none, netip.AddrPort{}},
		{"no 50, 54 or ciaddr", func(t *testing.T) *dhcpv4.DHCPv4 { return req(t, 1, none, none, none) },
			dhcpv4.MessageTypeNone, none, netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, nil)
			if ip := yiaddr(dora(t, s, mac(1), in, t0)); ip != first {
				t.Fatalf("setup: mac(1) got %v", ip)
			}
			now := t0.Add(30 * time.Minute)
			out := handle(t, s, tt.req(t), in, now)
			if tt.want == dhcpv4.MessageTypeNone {
				if out != nil {
					t.Fatalf("got %v, want no reply", out.Pkt.MessageType())
				}
				return
			}
			if out == nil {
				t.Fatalf("no reply, want %v", tt.want)
			}
			p := out.Pkt
			if p.MessageType() != tt.want || addrOf(p.YourIPAddr) != orZero(tt.wantIP) || out.Dst != tt.wantDst {
				t.Fatalf("got %v yiaddr %v to %v, want %v yiaddr %v to %v", p.MessageType(), p.YourIPAddr, out.Dst, tt.want, tt.wantIP, tt.wantDst)
			}
			if tt.want == dhcpv4.MessageTypeNak {
				for _, code := range []uint8{optLeaseTime, optRenewalTime, optRebindingTime, optSubnetMask, optBootFile} {
					if _, ok := p.Options[code]; ok {
						t.Errorf("NAK carries option %d", code)
					}
				}
				if !bytes.Equal(p.Options[optServerID], srvIP.AsSlice()) {
					t.Error("NAK without option 54")
				}
			}
			if tt.want == dhcpv4.MessageTypeAck {
				for _, l := range s.Leases() {
					if l.IP == tt.wantIP && !l.Expiry.Equal(now.Add(time.Hour)) {
						t.Errorf("lease of %v ends %v, want extended to %v", l.IP, l.Expiry, now.Add(time.Hour))
					}
				}
			}
		})
	}
}

func orZero(a netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return netip.IPv4Unspecified()
}

// A REQUEST for another server's offer frees ours at once.
func TestSelectingOtherServerFreesOffer(t *testing.T) {
	s := newServer(t, func(s *Server) {
		s.Subnets[0].RangeEnd = s.Subnets[0].RangeStart // one address
	})
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, t0)
	if o == nil {
		t.Fatal("no offer")
	}
	if handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2)), inBcast, t0) != nil {
		t.Fatal("second client got the reserved address")
	}
	other := build(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{192, 0, 2, 77})),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier([]byte{192, 0, 2, 2})))
	if out := handle(t, s, other, inBcast, t0); out != nil {
		t.Fatalf("answered a REQUEST for another server: %v", out.Pkt.MessageType())
	}
	if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2)), inBcast, t0); o == nil || yiaddr(o).String() != "192.0.2.100" {
		t.Errorf("the freed address was not offered again: %v", o)
	}
}

func TestDecline(t *testing.T) {
	s := newServer(t, nil)
	ip := yiaddr(dora(t, s, mac(1), inBcast, t0))
	// Only the holder can decline.
	foreign := build(t, dhcpv4.MessageTypeDecline, mac(2), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())))
	if out := handle(t, s, foreign, inBcast, t0); out != nil || len(s.leases.declined) != 0 {
		t.Fatal("a DECLINE from a client that does not hold the address took effect")
	}
	dec := build(t, dhcpv4.MessageTypeDecline, mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice())))
	if out := handle(t, s, dec, inBcast, t0); out != nil {
		t.Fatal("DECLINE answered")
	}
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, t0.Add(time.Second))
	if o == nil || yiaddr(o) == ip {
		t.Fatalf("after DECLINE of %v the client was offered %v", ip, o)
	}
	want := build(t, dhcpv4.MessageTypeDiscover, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())))
	if o := handle(t, s, want, inBcast, t0.Add(time.Minute)); yiaddr(o) == ip {
		t.Fatalf("quarantined %v offered", ip)
	}
	fresh := build(t, dhcpv4.MessageTypeDiscover, mac(4), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())))
	if o := handle(t, s, fresh, inBcast, t0.Add(DeclineHold+2*time.Minute)); yiaddr(o) != ip {
		t.Errorf("after the quarantine %v was not offered (got %v)", ip, yiaddr(o))
	}
	if s.Counters.Decline.Load() != 2 {
		t.Errorf("Decline = %d", s.Counters.Decline.Load())
	}
}

func TestReleaseThenRediscover(t *testing.T) {
	s := newServer(t, nil)
	ip := yiaddr(dora(t, s, mac(1), inBcast, t0))
	rel := build(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice())))
	now := t0.Add(10 * time.Minute)
	if out := handle(t, s, rel, inBcast, now); out != nil {
		t.Fatal("RELEASE answered")
	}
	if ls := s.Leases(); len(ls) != 1 || !ls[0].Expiry.Equal(now) {
		t.Fatalf("after RELEASE: %+v, want the record kept, ended now", ls)
	}
	// Others get other addresses first (next-fit) …
	if got := yiaddr(dora(t, s, mac(2), inBcast, now)); got == ip {
		t.Fatalf("released %v went to another client at once", ip)
	}
	// … and the client gets its old one back.
	if got := yiaddr(dora(t, s, mac(1), inBcast, now.Add(time.Minute))); got != ip {
		t.Errorf("re-DISCOVER got %v, want the released %v", got, ip)
	}
	// A released address is reusable once the pool has nothing fresh.
	s2 := newServer(t, func(s *Server) { s.Subnets[0].RangeEnd = s.Subnets[0].RangeStart })
	ip = yiaddr(dora(t, s2, mac(1), inBcast, t0))
	handle(t, s2, build(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(ip.AsSlice())), inBcast, now)
	if got := yiaddr(dora(t, s2, mac(2), inBcast, now)); got != ip {
		t.Errorf("released address not reused by another client in a full pool: got %v", got)
	}
}

func TestInform(t *testing.T) {
	s := newServer(t, nil)
	ci := netip.MustParseAddr("192.0.2.50")
	in := inBcast
	in.Src = netip.AddrPortFrom(ci, 68) // a client with an address sends from it
	out := handle(t, s, build(t, dhcpv4.MessageTypeInform, mac(1), dhcpv4.WithClientIP(ci.AsSlice())), in, t0)
	if out == nil || out.Pkt.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("INFORM: %v", out)
	}
	if out.Dst != netip.AddrPortFrom(ci, 68) || isSet(yiaddr(out)) || addrOf(out.Pkt.ClientIPAddr) != ci {
		t.Errorf("INFORM ACK to %v yiaddr %v ciaddr %v", out.Dst, out.Pkt.YourIPAddr, out.Pkt.ClientIPAddr)
	}
	for _, code := range []uint8{optLeaseTime, optRenewalTime, optRebindingTime} {
		if _, ok := out.Pkt.Options[code]; ok {
			t.Errorf("INFORM ACK carries lease option %d", code)
		}
	}
	for _, code := range []uint8{optSubnetMask, optRouter, optDNS, optServerID} {
		if _, ok := out.Pkt.Options[code]; !ok {
			t.Errorf("INFORM ACK lacks option %d", code)
		}
	}
	if len(s.Leases()) != 0 {
		t.Error("INFORM created a lease")
	}
}

func TestRelay(t *testing.T) {
	s := newServer(t, nil)
	agent := opt(optRelayAgent, []byte{1, 4, 'p', 'o', 'r', 't'})
	d := build(t, dhcpv4.MessageTypeDiscover, mac(1), relayed(relayIP), agent)
	o := handle(t, s, d, inRelay, t0)
	if o == nil {
		t.Fatal("no OFFER")
	}
	if got := yiaddr(o); !netip.MustParsePrefix("198.51.100.0/24").Contains(got) {
		t.Errorf("relayed client offered %v, want from giaddr's subnet", got)
	}
	if o.Dst != netip.AddrPortFrom(relayIP, 67) || o.IfIndex != 0 {
		t.Errorf("OFFER to %v if %d, want the relay's port 67", o.Dst, o.IfIndex)
	}
	if !bytes.Equal(o.Pkt.Options[optRelayAgent], []byte{1, 4, 'p', 'o', 'r', 't'}) || !net4Equal(o.Pkt.GatewayIPAddr, relayIP) {
		t.Errorf("option 82 %v / giaddr %v not echoed", o.Pkt.Options[optRelayAgent], o.Pkt.GatewayIPAddr)
	}
	if !bytes.Equal(o.Pkt.Options[optRouter], relayIP.AsSlice()) {
		t.Errorf("router %v, want the relayed subnet's", o.Pkt.Options[optRouter])
	}
	// A NAK through the relay has the BROADCAST bit (RFC 2131 §4.3.2).
	bad := build(t, dhcpv4.MessageTypeRequest, mac(1), relayed(relayIP), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{10, 0, 0, 1})))
	n := handle(t, s, bad, inRelay, t0)
	if n == nil || n.Pkt.MessageType() != dhcpv4.MessageTypeNak || !n.Pkt.IsBroadcast() || n.Dst != netip.AddrPortFrom(relayIP, 67) {
		t.Errorf("relayed NAK: %v", n)
	}
	// RFC 8357: a relay on another source port asks for replies there.
	in := inRelay
	in.Src = netip.AddrPortFrom(relayIP, 40067)
	d = build(t, dhcpv4.MessageTypeDiscover, mac(2), relayed(relayIP), opt(optRelayAgent, []byte{19, 0}))
	if o := handle(t, s, d, in, t0); o == nil || o.Dst != in.Src {
		t.Errorf("relay source port: reply to %v, want %v", o.Dst, in.Src)
	}
	// Without the sub-option, port 67 whatever the source port.
	d = build(t, dhcpv4.MessageTypeDiscover, mac(3), relayed(relayIP))
	if o := handle(t, s, d, in, t0); o == nil || o.Dst != netip.AddrPortFrom(relayIP, 67) {
		t.Errorf("relay without 82.19: reply to %v, want port 67", o.Dst)
	}
	// A giaddr in no subnet of ours: not answered.
	d = build(t, dhcpv4.MessageTypeDiscover, mac(4), relayed(netip.MustParseAddr("203.0.113.1")))
	if o := handle(t, s, d, inRelay, t0); o != nil {
		t.Errorf("answered a relay for an unknown network: %v", yiaddr(o))
	}
}

func net4Equal(ip []byte, a netip.Addr) bool { return addrOf(ip) == a }

// TestReplyDestination is docs/protocols.md §8.4's table.
func TestReplyDestination(t *testing.T) {
	ci := netip.MustParseAddr("192.0.2.50")
	// INFORM where the client has an address (ciaddr, sent from it),
	// DISCOVER where it has none.
	tests := []struct {
		name      string
		giaddr    bool
		ciaddr    bool
		broadcast bool
		wantDst   netip.AddrPort
		wantIf    int
	}{
		{"relay", true, false, false, netip.AddrPortFrom(relayIP, 67), 0},
		{"relay, ciaddr set", true, true, true, netip.AddrPortFrom(relayIP, 67), 0},
		{"ciaddr unicast", false, true, false, netip.AddrPortFrom(ci, 68), 0},
		{"ciaddr, broadcast bit", false, true, true, netip.AddrPortFrom(ci, 68), 0},
		{"broadcast bit", false, false, true, bcast68, 3},
		{"no broadcast bit: no ARP injection, broadcast", false, false, false, bcast68, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, nil)
			mods := []dhcpv4.Modifier{dhcpv4.WithBroadcast(tt.broadcast)}
			in := inBcast
			if tt.giaddr {
				mods = append(mods, relayed(relayIP))
				in = inRelay
			}
			mt := dhcpv4.MessageTypeDiscover
			if tt.ciaddr {
				mt = dhcpv4.MessageTypeInform
				mods = append(mods, dhcpv4.WithClientIP(ci.AsSlice()))
				if !tt.giaddr {
					in.Src = netip.AddrPortFrom(ci, 68)
				}
			}
			out := handle(t, s, build(t, mt, mac(1), mods...), in, t0)
			if out == nil {
				t.Fatal("no reply")
			}
			if out.Dst != tt.wantDst || out.IfIndex != tt.wantIf {
				t.Errorf("to %v if %d, want %v if %d", out.Dst, out.IfIndex, tt.wantDst, tt.wantIf)
			}
		})
	}
}

func TestStaticHost(t *testing.T) {
	static := netip.MustParseAddr("192.0.2.50") // outside the pool
	s := newServer(t, func(s *Server) {
		s.Hosts = []Host{{MAC: mac(5), IP: static, Hostname: "node5"}}
	})
	ack := dora(t, s, mac(5), inBcast, t0)
	if yiaddr(ack) != static || string(ack.Pkt.Options[optHostName]) != "node5" {
		t.Fatalf("static host got %v hostname %q", yiaddr(ack), ack.Pkt.Options[optHostName])
	}
	// Nobody else gets it, even by asking.
	d := build(t, dhcpv4.MessageTypeDiscover, mac(6), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(static.AsSlice())))
	if o := handle(t, s, d, inBcast, t0); yiaddr(o) == static {
		t.Error("static address offered to another client")
	}
	r := build(t, dhcpv4.MessageTypeRequest, mac(6), dhcpv4.WithClientIP(static.AsSlice()))
	if o := handle(t, s, r, inBcast, t0); o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeNak {
		t.Error("another client renewed the static address")
	}
	// The host asking for another address is told no.
	r = build(t, dhcpv4.MessageTypeRequest, mac(5), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{192, 0, 2, 101})))
	if o := handle(t, s, r, inBcast, t0); o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeNak {
		t.Error("static host ACKed for another address")
	}
	// A static address inside the pool is never handed out dynamically.
	s2 := newServer(t, func(s *Server) {
		s.Hosts = []Host{{MAC: mac(5), IP: netip.MustParseAddr("192.0.2.100")}}
	})
	if got := yiaddr(dora(t, s2, mac(1), inBcast, t0)); got.String() == "192.0.2.100" {
		t.Fatal("pool handed out a static address")
	}
	if ls := s.Leases(); len(ls) != 1 || !ls[0].Static {
		t.Errorf("Leases() = %+v, want one static lease", ls)
	}
}

// Clients are identified by option 61, else chaddr; one lease per client,
// and a MAC that shows up with a new client id keeps its address.
func TestClientIdentity(t *testing.T) {
	s := newServer(t, nil)
	id := opt(optClientID, append([]byte{1}, mac(1)...))
	ip := yiaddr(dora(t, s, mac(1), inBcast, t0))                      // PXE ROM: no 61
	if got := yiaddr(dora(t, s, mac(1), inBcast, t0, id)); got != ip { // iPXE: 61 = 01+MAC
		t.Errorf("same NIC with a client id got %v, want %v", got, ip)
	}
	duid := opt(optClientID, []byte{0xff, 0, 0, 0, 1, 0, 4, 9, 9, 9, 9})
	if got := yiaddr(dora(t, s, mac(1), inBcast, t0, duid)); got != ip { // the OS: a DUID
		t.Errorf("same NIC with a DUID got %v, want %v", got, ip)
	}
	if ls := s.Leases(); len(ls) != 1 {
		t.Errorf("one NIC holds %d leases: %+v", len(ls), ls)
	}
	// Option 61 wins over chaddr: same id on another chaddr is the same client.
	roam := opt(optClientID, []byte("roaming-client"))
	a := yiaddr(dora(t, s, mac(2), inBcast, t0, roam))
	if b := yiaddr(dora(t, s, mac(3), inBcast, t0, roam)); b != a {
		t.Errorf("client id on a new NIC got %v, want %v", b, a)
	}
	ack := dora(t, s, mac(4), inBcast, t0, opt(optClientID, []byte("echo-me")))
	if string(ack.Pkt.Options[optClientID]) != "echo-me" {
		t.Errorf("option 61 not echoed (RFC 6842): %q", ack.Pkt.Options[optClientID])
	}
}

func TestIgnoredAndBad(t *testing.T) {
	s := newServer(t, nil)
	reply := build(t, dhcpv4.MessageTypeOffer, mac(1))
	reply.OpCode = dhcpv4.OpcodeBootReply
	bootp := build(t, dhcpv4.MessageTypeDiscover, mac(1))
	delete(bootp.Options, optMessageType)
	noID := build(t, dhcpv4.MessageTypeDiscover, nil)
	for name, p := range map[string]*dhcpv4.DHCPv4{"BOOTREPLY": reply, "BOOTP": bootp, "no chaddr or 61": noID, "nil": nil} {
		if out := handle(t, s, p, inBcast, t0); out != nil {
			t.Errorf("%s answered", name)
		}
	}
	noAddr := inBcast
	noAddr.IfAddr = netip.Addr{}
	if out := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), noAddr, t0); out != nil {
		t.Error("answered on an interface without an address")
	}
	otherNet := inBcast
	otherNet.IfAddr = netip.MustParseAddr("203.0.113.1")
	if out := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), otherNet, t0); out != nil {
		t.Error("answered on an interface with no subnet")
	}
	if s.Counters.BadPacket.Load() != 3 || s.Counters.Ignored.Load() != 3 {
		t.Errorf("BadPacket %d Ignored %d, want 3 and 3", s.Counters.BadPacket.Load(), s.Counters.Ignored.Load())
	}
}

// Replies are padded to 300 bytes (BOOTP) and fit the client's limit:
// 548 bytes (576 with IP/UDP) unless option 57 says more.
func TestReplySize(t *testing.T) {
	many := func(s *Server) {
		for i := range 70 { // 280 bytes: two option-6 instances (RFC 3396)
			s.Subnets[0].DNS = append(s.Subnets[0].DNS, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 150)}))
		}
		s.Subnets[0].Domain = strings.Repeat("d", 200)
	}
	tests := []struct {
		name    string
		cfg     func(*Server)
		maxSize []byte // option 57
		min     int
		max     int
		dnsKept bool
	}{
		{"small reply padded", nil, nil, 300, 300, true},
		{"large reply trimmed to 548", many, nil, 300, 548, false},
		{"option 57 below 576 ignored", many, []byte{0x01, 0x00}, 300, 548, false},
		{"option 57 = 1500 allows all", many, []byte{0x05, 0xdc}, 549, 1472, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			var mods []dhcpv4.Modifier
			if tt.maxSize != nil {
				mods = append(mods, opt(optMaxMsgSize, tt.maxSize))
			}
			o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), mods...), inBcast, t0)
			if o == nil {
				t.Fatal("no reply")
			}
			if n := len(o.Bytes()); n < tt.min || n > tt.max {
				t.Errorf("%d bytes, want %d..%d", n, tt.min, tt.max)
			}
			if _, ok := o.Pkt.Options[optDNS]; ok != tt.dnsKept {
				t.Errorf("DNS kept = %v, want %v", ok, tt.dnsKept)
			}
			for _, code := range []uint8{optServerID, optLeaseTime, optSubnetMask} {
				if _, ok := o.Pkt.Options[code]; !ok {
					t.Errorf("trimmed essential option %d", code)
				}
			}
		})
	}
}

func TestLeaseOptionsDefaults(t *testing.T) {
	s := newServer(t, func(s *Server) { s.Subnets[0].LeaseTime = 0 })
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, t0)
	if got := binary.BigEndian.Uint32(o.Pkt.Options[optLeaseTime]); got != 3600 {
		t.Errorf("default lease %d s, want 3600", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*Server)
		want string // substring of the error; "" = valid
	}{
		{"ok", func(*Server) {}, ""},
		{"proxy without subnets", func(s *Server) { s.Mode = ModeProxy; s.Subnets = nil }, ""},
		{"bad mode", func(s *Server) { s.Mode = "relay" }, "Mode"},
		{"no subnets", func(s *Server) { s.Subnets = nil }, "Subnets: server mode"},
		{"range outside", func(s *Server) { s.Subnets[0].RangeEnd = netip.MustParseAddr("10.0.0.1") }, "Subnets[0]: Prefix/RangeStart/RangeEnd"},
		{"range reversed", func(s *Server) {
			s.Subnets[0].RangeStart, s.Subnets[0].RangeEnd = s.Subnets[0].RangeEnd, s.Subnets[0].RangeStart
		}, "in order"},
		{"range too long", func(s *Server) {
			s.Subnets[0] = Subnet{Prefix: netip.MustParsePrefix("10.0.0.0/7"), RangeStart: netip.MustParseAddr("10.0.0.1"), RangeEnd: netip.MustParseAddr("11.255.255.254")}
		}, "at most 16777216"},
		{"IPv6 subnet", func(s *Server) { s.Subnets[0].Prefix = netip.MustParsePrefix("2001:db8::/64") }, "Subnets[0]"},
		{"host without MAC", func(s *Server) { s.Hosts = []Host{{}} }, "Hosts[0]: MAC"},
		{"host twice", func(s *Server) { s.Hosts = []Host{{MAC: mac(1)}, {MAC: mac(1)}} }, "Hosts[1]: MAC"},
		{"IPv6 static address", func(s *Server) { s.Hosts = []Host{{MAC: mac(1), IP: netip.MustParseAddr("2001:db8::1")}} }, "Hosts[0].IP"},
		{"bad host template", func(s *Server) { s.Hosts = []Host{{MAC: mac(1), BootFile: "{{.X"}} }, "Hosts[0].BootFile"},
		{"bad template", func(s *Server) { s.Rules = []BootRule{{File: "{{.HTTP"}} }, "Rules[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Subnets: labSubnets()}
			tt.cfg(s)
			err := s.setup()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if _, herr := s.Handle(build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, t0); herr == nil {
				t.Error("Handle worked on an invalid configuration")
			}
		})
	}
}

// TestLeaseOf: the mirror asks who holds an address; it learns the MAC,
// the name and the architecture of the last ACKed request, and nothing for
// an expired or unknown address.
func TestLeaseOf(t *testing.T) {
	s := newServer(t, nil)
	hw := mac(1)
	ip := yiaddr(dora(t, s, hw, inBcast, t0, uefiX64()...))
	l, ok := s.LeaseOf(ip, t0.Add(time.Minute))
	if !ok || !bytes.Equal(l.MAC, hw) || l.Arch != "7" {
		t.Fatalf("LeaseOf(%v) = %+v, %v; want mac %v arch 7", ip, l, ok, hw)
	}
	plain := yiaddr(dora(t, s, mac(2), inBcast, t0))
	if l, ok := s.LeaseOf(plain, t0); !ok || l.Arch != "" {
		t.Errorf("a client without option 93: %+v, %v; want arch \"\"", l, ok)
	}
	if _, ok := s.LeaseOf(ip, t0.Add(2*time.Hour)); ok {
		t.Error("an expired lease is still reported")
	}
	if _, ok := s.LeaseOf(netip.MustParseAddr("192.0.2.199"), t0); ok {
		t.Error("an address nobody holds is reported")
	}
}
