package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// The lab network of the table tests (TEST-NET-1, docs/design.md, "Lab rules").
var (
	srvIP   = netip.MustParseAddr("192.0.2.1")
	relayIP = netip.MustParseAddr("198.51.100.1")
	t0      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	inBcast = Incoming{IfIndex: 3, IfAddr: srvIP, Src: netip.MustParseAddrPort("0.0.0.0:68"), Port: PortServer}
	inRelay = Incoming{IfIndex: 3, IfAddr: srvIP, Src: netip.AddrPortFrom(relayIP, 67), Port: PortServer}
	bcast68 = netip.MustParseAddrPort("255.255.255.255:68")
)

func labSubnets() []Subnet {
	return []Subnet{
		{
			Prefix:     netip.MustParsePrefix("192.0.2.0/24"),
			RangeStart: netip.MustParseAddr("192.0.2.100"), RangeEnd: netip.MustParseAddr("192.0.2.109"),
			Router: netip.MustParseAddr("192.0.2.254"), DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
			Domain: "lab.test", LeaseTime: time.Hour,
		},
		{
			Prefix:     netip.MustParsePrefix("198.51.100.0/24"),
			RangeStart: netip.MustParseAddr("198.51.100.10"), RangeEnd: netip.MustParseAddr("198.51.100.20"),
			Router: relayIP,
		},
	}
}

// newServer returns a server-mode Server on the lab subnets; configure
// may change any field before the first Handle.
func newServer(t testing.TB, configure func(*Server)) *Server {
	t.Helper()
	s := &Server{Subnets: labSubnets(), Relays: []netip.Prefix{netip.PrefixFrom(relayIP, 32)},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	if configure != nil {
		configure(s)
	}
	if err := s.setup(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, 0x12, byte(i >> 8), byte(i)}
}

// wire sends p through the codec, as the socket loop would see it.
func wire(t testing.TB, p *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	q, err := dhcpv4.FromBytes(p.ToBytes())
	if err != nil {
		t.Fatalf("codec round trip: %v", err)
	}
	return q
}

func build(t testing.TB, mt dhcpv4.MessageType, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	p, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(mt),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, byte(len(hw))}),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return wire(t, p)
}

// Client option sets, as real clients send them (docs/protocols.md §9.1,
// docs/lab-notes.md, "What the clients send").
func opt(code uint8, v []byte) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(code), v))
}

var uuid97 = append([]byte{0}, []byte("0123456789abcdef")...)

func pxeOpts(arch uint16, class string) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		opt(optVendorClass, []byte(class)),
		opt(optClientArch, []byte{byte(arch >> 8), byte(arch)}),
		opt(optClientNDI, []byte{1, 3, 16}),
		opt(optClientUUID, uuid97),
		opt(optParamRequest, []byte{1, 3, 6, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135}),
	}
}

func biosPXE() []dhcpv4.Modifier { return pxeOpts(0, "PXEClient:Arch:00000:UNDI:002001") }
func uefiX64() []dhcpv4.Modifier { return pxeOpts(7, "PXEClient:Arch:00007:UNDI:003000") }
func uefiARM64() []dhcpv4.Modifier {
	return pxeOpts(11, "PXEClient:Arch:00011:UNDI:003000")
}
func httpBoot() []dhcpv4.Modifier { return pxeOpts(16, "HTTPClient:Arch:00016:UNDI:003000") }

// ipxe is iPXE on x64 UEFI: raw "iPXE" in 77 and option 175.
func ipxe() []dhcpv4.Modifier {
	return append(pxeOpts(7, "PXEClient:Arch:00007:UNDI:003010"),
		opt(optUserClass, []byte("iPXE")), opt(optIPXEEncap, []byte{0x13, 1, 1, 0x15, 1, 1}))
}

func handle(t testing.TB, s *Server, req *dhcpv4.DHCPv4, in Incoming, now time.Time) *Outgoing {
	t.Helper()
	out, err := s.Handle(req, in, now)
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if out != nil {
		if n := len(out.Bytes()); n < 300 || n > replyLimit(req) {
			t.Fatalf("reply of %d bytes, want 300..%d", n, replyLimit(req))
		}
		// What goes on the wire parses back to the same thing.
		q, err := dhcpv4.FromBytes(out.Bytes())
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if q.MessageType() != out.Pkt.MessageType() {
			t.Fatalf("reply type %v on the wire, %v in Pkt", q.MessageType(), out.Pkt.MessageType())
		}
	}
	return out
}

// dora runs DISCOVER → OFFER → REQUEST → ACK and returns the ACK.
func dora(t testing.TB, s *Server, hw net.HardwareAddr, in Incoming, now time.Time, mods ...dhcpv4.Modifier) *Outgoing {
	t.Helper()
	offer := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, hw, mods...), in, now)
	if offer == nil || offer.Pkt.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("DISCOVER from %v: no OFFER (%v)", hw, offer)
	}
	ack := handle(t, s, selecting(t, hw, offer, in, mods...), in, now)
	if ack == nil || ack.Pkt.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST from %v: no ACK (%v)", hw, ack)
	}
	return ack
}

func selecting(t testing.TB, hw net.HardwareAddr, offer *Outgoing, in Incoming, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	all := append([]dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.Pkt.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.Pkt.ServerIdentifier())),
	}, mods...)
	return build(t, dhcpv4.MessageTypeRequest, hw, all...)
}

func yiaddr(o *Outgoing) netip.Addr { return addrOf(o.Pkt.YourIPAddr) }

func relayed(gi netip.Addr) dhcpv4.Modifier { return dhcpv4.WithRelay(gi.AsSlice()) }
