package dhcp

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func newProxy(t testing.TB, configure func(*Server)) *Server {
	return newServer(t, func(s *Server) {
		s.Mode = ModeProxy
		s.Subnets = nil
		if configure != nil {
			configure(s)
		}
	})
}

var in4011 = Incoming{IfIndex: 3, IfAddr: srvIP, Src: netip.MustParseAddrPort("192.0.2.77:68"), Port: PortProxy}

func TestProxyOffer(t *testing.T) {
	s := newProxy(t, nil)
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), uefiX64()...), inBcast, t0)
	if o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no proxy OFFER: %v", o)
	}
	p := o.Pkt
	if isSet(addrOf(p.YourIPAddr)) || addrOf(p.ServerIPAddr) != srvIP || p.BootFileName != "ipxe.efi" || !p.IsBroadcast() {
		t.Errorf("yiaddr %v siaddr %v file %q broadcast %v", p.YourIPAddr, p.ServerIPAddr, p.BootFileName, p.IsBroadcast())
	}
	if o.Dst != bcast68 || o.IfIndex != 3 {
		t.Errorf("to %v if %d", o.Dst, o.IfIndex)
	}
	for _, code := range []uint8{optServerID, optVendorClass, optClientUUID, optVendorSpecif} {
		if _, ok := p.Options[code]; !ok {
			t.Errorf("proxy OFFER lacks option %d", code)
		}
	}
	for _, code := range []uint8{optRequestedIP, optLeaseTime, optRenewalTime, optRebindingTime, optSubnetMask, optRouter} {
		if _, ok := p.Options[code]; ok {
			t.Errorf("proxy OFFER carries option %d", code)
		}
	}
	if len(s.Leases()) != 0 || s.Counters.ProxyOffer.Load() != 1 || s.Counters.ArchUEFI64.Load() != 1 {
		t.Errorf("leases %v, counters %v", s.Leases(), s.Counters.Snapshot())
	}
	// Relayed: back through the relay.
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2), append(biosPXE(), relayed(relayIP))...), inRelay, t0)
	if o == nil || o.Dst != netip.AddrPortFrom(relayIP, 67) {
		t.Errorf("relayed proxy OFFER to %v", o)
	}
}

func TestProxy4011(t *testing.T) {
	s := newProxy(t, nil)
	ci := netip.MustParseAddr("192.0.2.77")
	req := func(mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		return build(t, mt, mac(1), append(append(uefiX64(), dhcpv4.WithClientIP(ci.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice()))), mods...)...)
	}
	in := in4011
	in.Src = netip.AddrPortFrom(ci, 1234) // EDK2 uses its own station port
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform} {
		o := handle(t, s, req(mt), in, t0)
		if o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("%v on 4011: %v", mt, o)
		}
		if o.Dst != in.Src || o.IfIndex != 0 {
			t.Errorf("%v: ACK to %v, want the source %v", mt, o.Dst, in.Src)
		}
		if p := o.Pkt; isSet(addrOf(p.YourIPAddr)) || p.BootFileName != "ipxe.efi" || addrOf(p.ServerIPAddr) != srvIP {
			t.Errorf("%v: yiaddr %v file %q siaddr %v", mt, p.YourIPAddr, p.BootFileName, p.ServerIPAddr)
		}
		if _, ok := o.Pkt.Options[optLeaseTime]; ok {
			t.Errorf("%v: lease time in a proxy ACK", mt)
		}
	}
	// A boot-server request (43.71): yiaddr = ciaddr, item echoed
	// (docs/protocols.md §9.6).
	o := handle(t, s, req(dhcpv4.MessageTypeRequest, opt(optVendorSpecif, []byte{71, 4, 0, 0, 0, 0, 255})), in, t0)
	if o == nil || addrOf(o.Pkt.YourIPAddr) != ci || isSet(addrOf(o.Pkt.ClientIPAddr)) ||
		!bytes.Equal(o.Pkt.Options[optVendorSpecif], []byte{6, 1, 8, 71, 4, 0, 0, 0, 0, 255}) {
		t.Errorf("PXEBS ACK: %v", o)
	}
	if s.Counters.ProxyAck.Load() != 3 || s.Counters.Nak.Load() != 0 {
		t.Errorf("ProxyAck %d Nak %d", s.Counters.ProxyAck.Load(), s.Counters.Nak.Load())
	}
}

// A proxy answers netboot clients only, and only DISCOVER on 67 and
// REQUEST/INFORM on 4011; it never NAKs (docs/protocols.md §9.5).
func TestProxyIgnores(t *testing.T) {
	noArch := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000"))}
	foreign := netip.MustParseAddr("192.0.2.2")
	tests := []struct {
		name string
		mt   dhcpv4.MessageType
		mods []dhcpv4.Modifier
		in   Incoming
	}{
		{"plain DISCOVER", dhcpv4.MessageTypeDiscover, nil, inBcast},
		{"PXE DISCOVER without 93", dhcpv4.MessageTypeDiscover, noArch, inBcast},
		{"vendor class not at the start", dhcpv4.MessageTypeDiscover, pxeOpts(7, "MyPXEClient"), inBcast},
		{"DISCOVER on 4011", dhcpv4.MessageTypeDiscover, uefiX64(), in4011},
		{"REQUEST on 67", dhcpv4.MessageTypeRequest, append(uefiX64(), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{10, 0, 0, 1}))), inBcast},
		{"REQUEST on 4011 for another server", dhcpv4.MessageTypeRequest, append(uefiX64(), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(foreign.AsSlice()))), in4011},
		{"INFORM on 67", dhcpv4.MessageTypeInform, uefiX64(), inBcast},
		{"DECLINE", dhcpv4.MessageTypeDecline, uefiX64(), inBcast},
		{"RELEASE", dhcpv4.MessageTypeRelease, uefiX64(), in4011},
		{"plain REQUEST on 4011", dhcpv4.MessageTypeRequest, nil, in4011},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newProxy(t, nil)
			if o := handle(t, s, build(t, tt.mt, mac(1), tt.mods...), tt.in, t0); o != nil {
				t.Errorf("answered with %v", o.Pkt.MessageType())
			}
			if s.Counters.Ignored.Load() != 1 {
				t.Errorf("Ignored = %d", s.Counters.Ignored.Load())
			}
		})
	}
}

func TestProxyHTTPBoot(t *testing.T) {
	s := newProxy(t, func(s *Server) { s.HTTPBase = "http://198.51.100.80" })
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), httpBoot()...), inBcast, t0)
	if o == nil {
		t.Fatal("no proxy OFFER to an HTTP Boot client")
	}
	checkStr(t, o.Pkt, optVendorClass, "HTTPClient", false)
	checkStr(t, o.Pkt, optBootFile, "http://198.51.100.80/ipxe.efi", true)
	if _, ok := o.Pkt.Options[optVendorSpecif]; ok {
		t.Error("option 43 sent to an HTTP Boot client")
	}
	if addrOf(o.Pkt.ServerIPAddr).String() != "198.51.100.80" {
		t.Errorf("siaddr %v, want the mirror", o.Pkt.ServerIPAddr)
	}
}
