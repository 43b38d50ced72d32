package dhcp

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestRelaySpoofRefused is the first attack of issue 13 finding 9: a host
// on the server's own segment sends a DISCOVER claiming a giaddr in
// another subnet. Before, it got an OFFER from that subnet, sent to
// giaddr:67 — a way to drain a remote pool from anywhere. Now a relayed
// request is answered only when its giaddr and its source are both
// configured relay addresses.
func TestRelaySpoofRefused(t *testing.T) {
	lanHost := netip.MustParseAddrPort("192.0.2.77:68")
	fromLAN := Incoming{IfIndex: 3, IfAddr: srvIP, Src: lanHost, Port: PortServer}
	s := newServer(t, nil) // Relays: 198.51.100.1/32
	for i := range 20 {
		d := build(t, dhcpv4.MessageTypeDiscover, mac(100+i), relayed(relayIP))
		if o := handle(t, s, d, fromLAN, t0); o != nil {
			t.Fatalf("DISCOVER with giaddr %v from %v answered: %v to %v", relayIP, lanHost, yiaddr(o), o.Dst)
		}
	}
	if n := s.Counters.RelayRefused.Load(); n != 20 {
		t.Fatalf("RelayRefused = %d, want 20", n)
	}
	if len(s.Leases()) != 0 {
		t.Fatalf("leases after refused relays: %v", s.Leases())
	}
	// The relay itself (source == giaddr) is served.
	if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), relayed(relayIP)), inRelay, t0); o == nil || o.Dst != netip.AddrPortFrom(relayIP, 67) {
		t.Fatalf("DISCOVER from the relay: %v", o)
	}
	// No relays configured: nothing relayed is answered, even from giaddr.
	none := newServer(t, func(s *Server) { s.Relays = nil })
	if o := handle(t, none, build(t, dhcpv4.MessageTypeDiscover, mac(2), relayed(relayIP)), inRelay, t0); o != nil {
		t.Fatalf("relayed DISCOVER with dhcp.relays empty answered: %v", o)
	}
	// A relay that sends from another of its addresses, both listed.
	agentSrc := netip.MustParseAddr("192.0.2.254")
	two := newServer(t, func(s *Server) {
		s.Relays = []netip.Prefix{netip.PrefixFrom(relayIP, 32), netip.PrefixFrom(agentSrc, 32)}
	})
	in := inRelay
	in.Src = netip.AddrPortFrom(agentSrc, 67)
	if o := handle(t, two, build(t, dhcpv4.MessageTypeDiscover, mac(3), relayed(relayIP)), in, t0); o == nil ||
		!netip.MustParsePrefix("198.51.100.0/24").Contains(yiaddr(o)) {
		t.Fatalf("DISCOVER from a listed relay's other address: %v", o)
	}
}

// TestInformToSourceOnly is the second attack of finding 9: an INFORM
// with a foreign ciaddr got a 300-byte ACK sent to that address (a
// reflector). Now an INFORM is answered only to its source address, and
// not at all when its ciaddr is another.
func TestInformToSourceOnly(t *testing.T) {
	s := newServer(t, nil)
	attacker := netip.MustParseAddrPort("192.0.2.77:68")
	victim := netip.MustParseAddr("192.0.2.200")
	in := Incoming{IfIndex: 3, IfAddr: srvIP, Src: attacker, Port: PortServer}
	if o := handle(t, s, build(t, dhcpv4.MessageTypeInform, mac(1), dhcpv4.WithClientIP(victim.AsSlice())), in, t0); o != nil {
		t.Fatalf("INFORM with ciaddr %v from %v: ACK to %v", victim, attacker, o.Dst)
	}
	if n := s.Counters.InformRefused.Load(); n != 1 {
		t.Fatalf("InformRefused = %d, want 1", n)
	}
	for name, ci := range map[string]netip.Addr{"ciaddr = source": attacker.Addr(), "no ciaddr": netip.IPv4Unspecified()} {
		o := handle(t, s, build(t, dhcpv4.MessageTypeInform, mac(1), dhcpv4.WithClientIP(ci.AsSlice())), in, t0)
		if o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeAck || o.Dst != attacker {
			t.Errorf("%s: %v, want an ACK to %v", name, o, attacker)
		}
	}
	// No source address (0.0.0.0): nobody to answer.
	if o := handle(t, s, build(t, dhcpv4.MessageTypeInform, mac(1)), inBcast, t0); o != nil {
		t.Errorf("INFORM from 0.0.0.0 answered to %v", o.Dst)
	}
}
