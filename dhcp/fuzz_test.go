package dhcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// FuzzHandle feeds arbitrary datagrams through the codec into Handle in
// both modes, on both ports, with and without a relay. Handle must not
// panic, and every reply must encode within the client's limits and obey
// the mode's rules.
func FuzzHandle(f *testing.F) {
	seed := func(mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) {
		f.Add(build(f, mt, mac(1), mods...).ToBytes(), uint8(0))
	}
	seed(dhcpv4.MessageTypeDiscover)
	seed(dhcpv4.MessageTypeDiscover, biosPXE()...)
	seed(dhcpv4.MessageTypeDiscover, ipxe()...)
	seed(dhcpv4.MessageTypeDiscover, httpBoot()...)
	seed(dhcpv4.MessageTypeDiscover, append(uefiX64(), relayed(relayIP), opt(optRelayAgent, []byte{19, 0}))...)
	seed(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{192, 0, 2, 100})),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice())))
	seed(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP([]byte{192, 0, 2, 100}))
	seed(dhcpv4.MessageTypeRequest, append(uefiX64(), dhcpv4.WithClientIP([]byte{192, 0, 2, 9}), opt(optVendorSpecif, []byte{71, 4, 0, 0, 0, 0, 255}))...)
	seed(dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{192, 0, 2, 100})))
	seed(dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP([]byte{192, 0, 2, 100}))
	seed(dhcpv4.MessageTypeInform, dhcpv4.WithClientIP([]byte{192, 0, 2, 50}), opt(optMaxMsgSize, []byte{0xff, 0xff}))

	nop := func(s *Server) { s.Log = zerolog.Nop() }
	servers := []*Server{
		newServer(f, func(s *Server) {
			nop(s)
			s.Hosts = []Host{{MAC: mac(1), IP: netip.MustParseAddr("192.0.2.50"), BootFile: "{{.MACDash}}.efi"}}
		}),
		newProxy(f, nop),
	}
	var tick time.Duration
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		s := servers[sel&1]
		in := inBcast
		switch sel >> 1 & 3 {
		case 1:
			in = inRelay
		case 2:
			in = in4011
		case 3:
			in.IfAddr = netip.Addr{}
		}
		tick += 7 * time.Second
		out, err := s.Handle(req, in, t0.Add(tick))
		if err != nil {
			t.Fatal(err) // no lease file: nothing can fail
		}
		if out == nil {
			return
		}
		b := out.Bytes()
		if len(b) < 300 || len(b) > replyLimit(req) {
			t.Fatalf("reply of %d bytes (limit %d)", len(b), replyLimit(req))
		}
		back, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if back.TransactionID != req.TransactionID || back.OpCode != dhcpv4.OpcodeBootReply {
			t.Fatal("reply xid/op wrong")
		}
		if s.mode == ModeProxy {
			mt := back.MessageType()
			if mt == dhcpv4.MessageTypeNak || back.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
				t.Fatalf("proxy sent %v with lease time %v", mt, back.Options.Has(dhcpv4.OptionIPAddressLeaseTime))
			}
			if mt == dhcpv4.MessageTypeOffer && !back.YourIPAddr.IsUnspecified() {
				t.Fatalf("proxy OFFER with yiaddr %v", back.YourIPAddr)
			}
		}
	})
}
