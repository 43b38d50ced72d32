package dhcp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	t6      = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	srv6IP  = netip.MustParseAddr("2001:db8:1::1")
	cli6Src = netip.MustParseAddrPort("[fe80::5054:ff:fe12:3456]:546")
	in6     = Incoming6{Src: cli6Src, IfIndex: 2, IfAddr: srv6IP}
)

func newServer6(t *testing.T, mod ...func(*Server6)) *Server6 {
	t.Helper()
	s := &Server6{
		Interfaces: []string{"lab0"}, Prefix: netip.MustParsePrefix("2001:db8:1::/64"),
		RangeStart: netip.MustParseAddr("2001:db8:1::100"), RangeEnd: netip.MustParseAddr("2001:db8:1::1ff"),
		DUID: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}, Rate: -1,
	}
	for _, m := range mod {
		m(s)
	}
	if err := s.setup(); err != nil {
		t.Fatal(err)
	}
	return s
}

// client6 is a test DHCPv6 client: a DUID and one IA_NA per iaid.
type client6 struct {
	duid  dhcpv6.DUID
	iaids [][4]byte
	opts  []dhcpv6.Modifier
}

func ovmf(n byte) client6 {
	return client6{
		duid:  &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, n}},
		iaids: [][4]byte{{0, 0, 0, n}},
		opts: []dhcpv6.Modifier{
			dhcpv6.WithArchType(iana.EFI_X86_64),
			dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("PXEClient:Arch:00007:UNDI:003016")}}),
			dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL, dhcpv6.OptionDNSRecursiveNameServer),
		},
	}
}

// msg builds a message of type mt; sid is the server's DUID (nil: none);
// addrs, if any, go into every IA_NA.
func (c client6) msg(t *testing.T, mt dhcpv6.MessageType, sid []byte, addrs ...netip.Addr) []byte {
	t.Helper()
	m, err := dhcpv6.NewMessage()
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = mt
	m.AddOption(dhcpv6.OptClientID(c.duid))
	if sid != nil {
		m.AddOption(&rawOpt{code: dhcpv6.OptionServerID, data: sid})
	}
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for _, id := range c.iaids {
		o := &dhcpv6.OptIANA{IaId: id}
		for _, a := range addrs {
			o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.AsSlice(), PreferredLifetime: time.Hour, ValidLifetime: time.Hour})
		}
		m.AddOption(o)
	}
	for _, mod := range c.opts {
		mod(m)
	}
	return m.ToBytes()
}

func handle6(t *testing.T, s *Server6, pkt []byte, now time.Time) *dhcpv6.Message {
	t.Helper()
	out, err := s.Handle(pkt, in6, now)
	if err != nil {
		t.Fatal(err)
	}
	if out == nil {
		return nil
	}
	m, err := dhcpv6.MessageFromBytes(out)
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m
}

// addrOfIA is the first address of the reply's first IA_NA, and its
// status (Success when none).
func addrOfIA(t *testing.T, m *dhcpv6.Message) (netip.Addr, iana.StatusCode, time.Duration) {
	t.Helper()
	o := m.Options.OneIANA()
	if o == nil {
		t.Fatalf("no IA_NA in %s", m)
	}
	st := iana.StatusSuccess
	if sc := o.Options.Status(); sc != nil {
		st = sc.StatusCode
	}
	as := o.Options.Addresses()
	if len(as) == 0 {
		return netip.Addr{}, st, 0
	}
	a, _ := netip.AddrFromSlice(as[0].IPv6Addr)
	return a, st, as[0].ValidLifetime
}

// boot6 runs Solicit → Advertise → Request → Reply and returns the
// address and the Reply.
func boot6(t *testing.T, s *Server6, c client6, now time.Time) (netip.Addr, *dhcpv6.Message) {
	t.Helper()
	adv := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), now)
	if adv == nil || adv.MessageType != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("Solicit: want an Advertise, got %v", adv)
	}
	ip, st, _ := addrOfIA(t, adv)
	if st != iana.StatusSuccess || !ip.IsValid() {
		t.Fatalf("Advertise: status %v, address %v", st, ip)
	}
	rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeRequest, s.duid, ip), now)
	if rep == nil || rep.MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("Request: want a Reply, got %v", rep)
	}
	got, st, valid := addrOfIA(t, rep)
	if got != ip || st != iana.StatusSuccess || valid != DefaultLeaseTime {
		t.Fatalf("Reply: %v status %v valid %v, want %v Success %v", got, st, valid, ip, DefaultLeaseTime)
	}
	return ip, rep
}

func TestV6SolicitRequestBootURL(t *testing.T) {
	s := newServer6(t, func(s *Server6) { s.DNS = []netip.Addr{srv6IP} })
	c := ovmf(1)
	adv := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6)
	if got := adv.Options.BootFileURL(); got != "tftp://[2001:db8:1::1]/ipxe.efi" {
		t.Errorf("Advertise boot URL %q, want tftp://[2001:db8:1::1]/ipxe.efi", got)
	}
	if adv.Options.Preference() != 255 || !bytes.Equal(adv.Options.ServerID().ToBytes(), s.duid) {
		t.Errorf("Advertise: preference %d, server id %v", adv.Options.Preference(), adv.Options.ServerID())
	}
	if len(adv.Options.DNS()) != 1 {
		t.Errorf("DNS asked for, not sent: %v", adv.Options.DNS())
	}
	ip, rep := boot6(t, s, c, t6)
	if !s.Prefix.Contains(ip) || rep.Options.BootFileURL() == "" {
		t.Fatalf("Reply: %v, boot URL %q", ip, rep.Options.BootFileURL())
	}
	ls := s.Leases()
	if len(ls) != 1 || ls[0].IP != ip || ls[0].Arch != "7" || ls[0].MAC.String() != "52:54:00:12:34:01" || !ls[0].Expiry.After(t6) {
		t.Fatalf("leases: %+v", ls)
	}
	// The same client again (a reboot) gets the same address.
	if again, _ := boot6(t, s, c, t6.Add(time.Minute)); again != ip {
		t.Errorf("second boot got %v, first %v", again, ip)
	}
}

func TestV6IPXEGetsScriptURL(t *testing.T) {
	s := newServer6(t, func(s *Server6) { s.HTTPPort = 8080 })
	c := ovmf(2)
	c.opts = append(c.opts, dhcpv6.WithUserClass([]byte("iPXE")))
	_, rep := boot6(t, s, c, t6)
	if got, want := rep.Options.BootFileURL(), "http://[2001:db8:1::1]:8080/boot.ipxe?mac=52:54:00:12:34:02"; got != want {
		t.Errorf("iPXE boot URL %q, want %q", got, want)
	}
	// iPXE's own DUID is a DUID-UUID: the MAC comes from its EUI-64
	// link-local source address (in6: fe80::5054:ff:fe12:3456).
	c.duid = &dhcpv6.DUIDUUID{UUID: [16]byte{1, 2, 3}}
	_, rep = boot6(t, s, c, t6)
	if got, want := rep.Options.BootFileURL(), "http://[2001:db8:1::1]:8080/boot.ipxe?mac=52:54:00:12:34:56"; got != want {
		t.Errorf("iPXE (DUID-UUID) boot URL %q, want %q", got, want)
	}
}

// TestV6HostBootFile: a [[dhcp.host]] named by the MAC in the DUID (or
// the EUI-64 source) gets its boot file and variables; iPXE still the
// rules.
func TestV6HostBootFile(t *testing.T) {
	s := newServer6(t, func(s *Server6) {
		s.Hosts = []Host{{MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 8}, BootFile: "{{.Vars.loader}}", Vars: map[string]string{"loader": "grubx64.efi"}}}
	})
	c := ovmf(8)
	if _, rep := boot6(t, s, c, t6); rep.Options.BootFileURL() != "tftp://[2001:db8:1::1]/grubx64.efi" {
		t.Errorf("host boot file: %q", rep.Options.BootFileURL())
	}
	c.opts = append(c.opts, dhcpv6.WithUserClass([]byte("iPXE")))
	if _, rep := boot6(t, s, c, t6); !strings.Contains(rep.Options.BootFileURL(), "/boot.ipxe?mac=52:54:00:12:34:08") {
		t.Errorf("iPXE on a host with a boot file: %q, want the rules' script", rep.Options.BootFileURL())
	}
}

// TestV6ArchFallback: without option 61 the vendor class's Arch field
// decides; without both, only DefaultArch (metal3 #916).
func TestV6ArchFallback(t *testing.T) {
	s := newServer6(t)
	c := ovmf(3)
	c.opts = c.opts[1:] // no option 61
	if adv := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6); adv == nil || !strings.HasSuffix(adv.Options.BootFileURL(), "/ipxe.efi") {
		t.Fatalf("vendor class arch: %v", adv)
	}
	c.opts = c.opts[1:] // no vendor class either
	if adv := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6); adv != nil {
		t.Fatalf("no arch at all: want no answer (no rule), got %v", adv)
	}
	if s.Counters.NoArch.Load() != 1 {
		t.Errorf("NoArch = %d", s.Counters.NoArch.Load())
	}
	arm := uint16(11)
	s = newServer6(t, func(s *Server6) { s.DefaultArch = &arm })
	if adv := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6); adv == nil || !strings.HasSuffix(adv.Options.BootFileURL(), "/snp-arm64.efi") {
		t.Fatalf("DefaultArch 11: %v", adv)
	}
}

// TestV6OnlyNetbootClients: only netboot clients are answered — those
// that ask for option 59, or send a PXEClient or HTTPClient vendor class
// or the user class iPXE; a plain host's Solicit, Rebind, Confirm and
// Information-request are not (on a link with a real DHCPv6 server our
// Preference 255 would win them all). What names our Server ID is.
func TestV6OnlyNetbootClients(t *testing.T) {
	s := newServer6(t)
	vc := func(v string) dhcpv6.Modifier {
		return dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte(v)}})
	}
	for name, opts := range map[string][]dhcpv6.Modifier{
		"ORO 59":       {dhcpv6.WithArchType(iana.EFI_X86_64), dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL)},
		"PXEClient":    {vc("PXEClient:Arch:00007:UNDI:003016")},
		"HTTPClient":   {vc("HTTPClient:Arch:00016:UNDI:003001")},
		"iPXE":         {dhcpv6.WithUserClass([]byte("iPXE"))},
		"OVMF (§14.5)": ovmf(1).opts,
		"iPXE (§14.5)": {dhcpv6.WithArchType(iana.EFI_X86_64), vc("PXEClient:Arch:00007:UNDI:003010"), dhcpv6.WithUserClass([]byte("iPXE"))},
	} {
		c := ovmf(2)
		c.opts = opts
		if adv := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6); adv == nil || adv.MessageType != dhcpv6.MessageTypeAdvertise {
			t.Errorf("%s: Solicit answered %v, want an Advertise", name, adv)
		}
	}
	plain := ovmf(3)
	plain.opts = []dhcpv6.Modifier{dhcpv6.WithRequestedOptions(dhcpv6.OptionDNSRecursiveNameServer), vc("MSFT 5.0"), dhcpv6.WithUserClass([]byte("debian"))}
	for _, mt := range []dhcpv6.MessageType{dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeInformationRequest} {
		if out := handle6(t, s, plain.msg(t, mt, nil, netip.MustParseAddr("2001:db8:1::100")), t6); out != nil {
			t.Errorf("plain host's %v answered: %v", mt, out)
		}
	}
	if n := s.Counters.NotNetboot.Load(); n != 4 {
		t.Errorf("NotNetboot = %d, want 4", n)
	}
	// A netboot client's lease, Renewed by what boots next without
	// asking for option 59: it names our Server ID, so it is answered.
	ip, _ := boot6(t, s, ovmf(4), t6)
	next := ovmf(4)
	next.opts = plain.opts
	if rep := handle6(t, s, next.msg(t, dhcpv6.MessageTypeRenew, s.duid, ip), t6); rep == nil {
		t.Error("Renew of our lease without option 59: unanswered")
	} else if got, st, _ := addrOfIA(t, rep); got != ip || st != iana.StatusSuccess {
		t.Errorf("Renew: %v %v, want %v Success", got, st, ip)
	}
}

func TestV6RenewRebindReleaseDeclineConfirm(t *testing.T) {
	s := newServer6(t)
	c := ovmf(4)
	ip, _ := boot6(t, s, c, t6)
	later := t6.Add(40 * time.Minute)
	for _, mt := range []dhcpv6.MessageType{dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind} {
		var sid []byte
		if mt == dhcpv6.MessageTypeRenew {
			sid = s.duid
		}
		rep := handle6(t, s, c.msg(t, mt, sid, ip), later)
		if got, st, valid := addrOfIA(t, rep); got != ip || st != iana.StatusSuccess || valid != DefaultLeaseTime {
			t.Fatalf("%v: %v %v %v", mt, got, st, valid)
		}
	}
	if l := s.Leases()[0]; !l.Expiry.Equal(later.Add(DefaultLeaseTime)) {
		t.Errorf("renewed lease ends %v, want %v", l.Expiry, later.Add(DefaultLeaseTime))
	}
	// Renew of an IA we do not know: NoBinding; a Renew for another
	// server: no answer.
	other := ovmf(5)
	if rep := handle6(t, s, other.msg(t, dhcpv6.MessageTypeRenew, s.duid), later); rep == nil {
		t.Fatal("Renew of an unknown IA: no answer")
	} else if _, st, _ := addrOfIA(t, rep); st != iana.StatusNoBinding {
		t.Errorf("Renew of an unknown IA: %v, want NoBinding", st)
	}
	if rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeRenew, []byte{0, 2, 0, 0, 0, 9, 1}, ip), later); rep != nil {
		t.Errorf("Renew naming another server answered: %v", rep)
	}
	// Rebind naming an address we never gave: lifetimes 0.
	stray := netip.MustParseAddr("2001:db8:1::1fe")
	if rep := handle6(t, s, other.msg(t, dhcpv6.MessageTypeRebind, nil, stray), later); rep == nil {
		t.Fatal("Rebind of a stray address: no answer")
	} else if got, _, valid := addrOfIA(t, rep); got != stray || valid != 0 {
		t.Errorf("Rebind of a stray address: %v valid %v, want it with lifetime 0", got, valid)
	}
	// Confirm: on link or not.
	for _, tc := range []struct {
		a    netip.Addr
		want iana.StatusCode
	}{{ip, iana.StatusSuccess}, {netip.MustParseAddr("2001:db8:2::5"), iana.StatusNotOnLink}} {
		rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeConfirm, nil, tc.a), later)
		if rep == nil || rep.Options.Status() == nil || rep.Options.Status().StatusCode != tc.want {
			t.Errorf("Confirm %v: %v, want %v", tc.a, rep, tc.want)
		}
	}
	// Release: the lease ends now, kept as a hint.
	if rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeRelease, s.duid, ip), later); rep == nil || rep.Options.Status().StatusCode != iana.StatusSuccess {
		t.Fatalf("Release: %v", rep)
	}
	if l := s.Leases()[0]; !l.Expiry.Equal(later) {
		t.Errorf("released lease ends %v, want %v", l.Expiry, later)
	}
	// Decline: the address is quarantined, the client gets another.
	ip2, _ := boot6(t, s, c, later)
	if ip2 != ip {
		t.Fatalf("after Release the client got %v, not its old %v", ip2, ip)
	}
	if rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeDecline, s.duid, ip), later); rep == nil {
		t.Fatal("Decline: no answer")
	}
	if ip3, _ := boot6(t, s, c, later); ip3 == ip {
		t.Errorf("declined address %v handed out again", ip)
	}
	// Information-request: configuration and boot URL, no address.
	rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeInformationRequest, nil), later)
	if rep == nil || rep.Options.OneIANA() != nil || rep.Options.BootFileURL() == "" {
		t.Errorf("Information-request: %v", rep)
	}
	// One without a client id is answered too, unless it names another
	// server.
	anon := client6{duid: nil, opts: c.opts}
	for _, tc := range []struct {
		sid    []byte
		answer bool
	}{{nil, true}, {s.duid, true}, {[]byte{0, 2, 0, 0, 0, 9, 1}, false}} {
		m, _ := dhcpv6.NewMessage()
		m.MessageType = dhcpv6.MessageTypeInformationRequest
		if tc.sid != nil {
			m.AddOption(&rawOpt{code: dhcpv6.OptionServerID, data: tc.sid})
		}
		for _, mod := range anon.opts {
			mod(m)
		}
		if rep := handle6(t, s, m.ToBytes(), later); (rep != nil) != tc.answer {
			t.Errorf("Information-request without client id, server id %x: answered %v, want %v", tc.sid, rep != nil, tc.answer)
		}
	}
}

func TestV6RapidCommit(t *testing.T) {
	s := newServer6(t, func(s *Server6) { s.RapidCommit = true })
	c := ovmf(6)
	c.opts = append(c.opts, dhcpv6.WithRapidCommit)
	rep := handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6)
	if rep.MessageType != dhcpv6.MessageTypeReply || rep.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		t.Fatalf("Rapid Commit Solicit: %v", rep)
	}
	if ls := s.Leases(); len(ls) != 1 || !ls[0].Expiry.After(t6) {
		t.Fatalf("Rapid Commit left no lease: %+v", ls)
	}
}

// TestV6Hostile: what an unproven sender can make the server hold and
// send is bounded.
func TestV6Hostile(t *testing.T) {
	t.Run("duid-limit", func(t *testing.T) {
		s := newServer6(t)
		c := ovmf(7)
		c.iaids = nil
		for i := range DefaultMaxPerDUID + 2 {
			c.iaids = append(c.iaids, [4]byte{9, 9, 9, byte(i)})
		}
		// maxIAs per message, then more messages with more IAIDs.
		got := 0
		for i := 0; i < len(c.iaids); i += maxIAs {
			cc := c
			cc.iaids = c.iaids[i:min(i+maxIAs, len(c.iaids))]
			adv := handle6(t, s, cc.msg(t, dhcpv6.MessageTypeSolicit, nil), t6)
			for _, o := range adv.Options.IANA() {
				got += len(o.Options.Addresses())
			}
		}
		if got != DefaultMaxPerDUID || s.Counters.DUIDLimited.Load() == 0 {
			t.Errorf("one DUID got %d addresses (limit %d), DUIDLimited %d", got, DefaultMaxPerDUID, s.Counters.DUIDLimited.Load())
		}
	})
	t.Run("zero-uuid", func(t *testing.T) {
		// Machines whose firmware has no SMBIOS UUID share the DUID-UUID
		// of zeros (iPXE in QEMU without -uuid): each is its own owner.
		s := newServer6(t)
		got := 0
		for i := range DefaultMaxPerDUID + 2 {
			c := ovmf(byte(40 + i))
			c.duid = &dhcpv6.DUIDUUID{}
			ip, st, _ := addrOfIA(t, handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6))
			if st == iana.StatusSuccess && ip.IsValid() {
				got++
			}
		}
		if got != DefaultMaxPerDUID+2 {
			t.Errorf("%d of %d machines with a zero DUID-UUID got an address", got, DefaultMaxPerDUID+2)
		}
	})
	t.Run("offer-flood", func(t *testing.T) {
		s := newServer6(t, func(s *Server6) { s.RangeEnd = netip.MustParseAddr("2001:db8:1::103") })
		for i := range 4 {
			if adv := handle6(t, s, ovmf(byte(10+i)).msg(t, dhcpv6.MessageTypeSolicit, nil), t6); adv == nil {
				t.Fatal("Solicit unanswered")
			}
		}
		// The pool is full of Advertises nobody Requested: within
		// OfferGrace a fifth client is told NoAddrsAvail, after it the
		// oldest is reclaimed.
		c := ovmf(20)
		if _, st, _ := addrOfIA(t, handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6)); st != iana.StatusNoAddrsAvail {
			t.Errorf("full pool: %v, want NoAddrsAvail", st)
		}
		ip, st, _ := addrOfIA(t, handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), t6.Add(OfferGrace)))
		if st != iana.StatusSuccess || !ip.IsValid() || s.Counters.OffersReclaim.Load() != 1 {
			t.Errorf("after OfferGrace: %v %v, reclaimed %d", ip, st, s.Counters.OffersReclaim.Load())
		}
		if n := len(s.leases.byKey); n > 4 {
			t.Errorf("%d bindings for a pool of 4", n)
		}
	})
	t.Run("own-address", func(t *testing.T) {
		// The server's address on the link inside the range (IfAddr) is
		// never handed out, neither picked nor to a client naming it.
		s := newServer6(t, func(s *Server6) { s.RangeStart = srv6IP })
		if ip, _, _ := addrOfIA(t, handle6(t, s, ovmf(1).msg(t, dhcpv6.MessageTypeSolicit, nil), t6)); ip == srv6IP {
			t.Errorf("Advertise offers the server's own %v", ip)
		}
		for _, mt := range []dhcpv6.MessageType{dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest} {
			var sid []byte
			if mt == dhcpv6.MessageTypeRequest {
				sid = s.duid
			}
			if ip, _, _ := addrOfIA(t, handle6(t, s, ovmf(2).msg(t, mt, sid, srv6IP), t6)); ip == srv6IP {
				t.Errorf("%v naming the server's own address gets it", mt)
			}
		}
	})
	t.Run("request-flood", func(t *testing.T) {
		// Requests straight away (no Solicit), each from a new source
		// with a new DUID and 4 IAs: no binding, NoAddrsAvail; the
		// Solicit → Request of a real client still commits.
		s := newServer6(t, func(s *Server6) { s.Rate = 0 })
		const n = 2000
		in := in6
		for i := range uint32(n) {
			in.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}), 546)
			out, err := s.Handle(floodClient(i, maxIAs).msg(t, dhcpv6.MessageTypeRequest, s.duid), in, t6)
			if err != nil || out == nil {
				t.Fatalf("Request %d: %v, %d bytes", i, err, len(out))
			}
			m, _ := dhcpv6.MessageFromBytes(out)
			if ip, st, _ := addrOfIA(t, m); ip.IsValid() || st != iana.StatusNoAddrsAvail {
				t.Fatalf("Request %d without an Advertise: %v %v, want NoAddrsAvail", i, ip, st)
			}
		}
		if b, na := len(s.leases.byKey), s.Counters.NotAdvertised.Load(); b != 0 || na != n*maxIAs {
			t.Errorf("%d Requests of %d IAs: %d bindings, NotAdvertised %d", n, maxIAs, b, na)
		}
		boot6(t, s, ovmf(1), t6)
	})
	t.Run("rapid-flood", func(t *testing.T) {
		// Rapid Commit Solicits with new DUIDs: rapidBurst IAs committed
		// at once, rapidRate a second after; the rest Advertised.
		s := newServer6(t, func(s *Server6) { s.RapidCommit = true })
		committed := func() (n int) {
			for _, l := range s.Leases() {
				if !l.Expiry.IsZero() {
					n++
				}
			}
			return n
		}
		sol := func(i uint32, now time.Time) dhcpv6.MessageType {
			c := floodClient(i, 1)
			c.opts = append(c.opts, dhcpv6.WithRapidCommit)
			return handle6(t, s, c.msg(t, dhcpv6.MessageTypeSolicit, nil), now).MessageType
		}
		for i := range uint32(2 * rapidBurst) {
			sol(i, t6)
		}
		if n, l := committed(), s.Counters.RapidLimited.Load(); n != rapidBurst || l != rapidBurst {
			t.Errorf("%d Rapid Commit Solicits at once: %d committed (want %d), RapidLimited %d", 2*rapidBurst, n, rapidBurst, l)
		}
		if mt := sol(1000, t6.Add(time.Second)); mt != dhcpv6.MessageTypeReply {
			t.Errorf("a second later: %v, want a Rapid Commit Reply", mt)
		}
		// One Advertised for want of tokens Solicits again: an IA with a
		// binding costs none, so it gets its Rapid Commit Reply even with
		// the bucket empty.
		if mt := sol(2*rapidBurst-1, t6.Add(time.Second)); mt != dhcpv6.MessageTypeReply {
			t.Errorf("an Advertised IA's second Solicit: %v, want a Rapid Commit Reply", mt)
		}
	})
	t.Run("not-link-local", func(t *testing.T) {
		s := newServer6(t)
		in := in6
		in.Src = netip.MustParseAddrPort("[2001:db8:9::5]:546")
		if out, _ := s.Handle(ovmf(1).msg(t, dhcpv6.MessageTypeSolicit, nil), in, t6); out != nil {
			t.Error("answered a Solicit from a global source (relayed or forged)")
		}
	})
	t.Run("rate", func(t *testing.T) {
		s := newServer6(t, func(s *Server6) { s.Rate = 0 })
		n := 0
		for range 3 * DefaultRate6 {
			if handle6(t, s, ovmf(1).msg(t, dhcpv6.MessageTypeSolicit, nil), t6) != nil {
				n++
			}
		}
		if n != 2*DefaultRate6 || s.Counters.RateLimited.Load() != DefaultRate6 {
			t.Errorf("answered %d of %d at once (burst %d), rate-limited %d", n, 3*DefaultRate6, 2*DefaultRate6, s.Counters.RateLimited.Load())
		}
	})
	t.Run("reply-size", func(t *testing.T) {
		// A long URL does not make an answer more than replyFactor ×
		// the request (floor replyFloor): the URL is left out.
		long := "http://[2001:db8:1::1]/" + strings.Repeat("x", 1200)
		s := newServer6(t, func(s *Server6) { s.Rules = []BootRule{{File: long}} })
		req := ovmf(1).msg(t, dhcpv6.MessageTypeSolicit, nil)
		out, _ := s.Handle(req, in6, t6)
		if len(out) == 0 || len(out) > max(replyFactor*len(req), replyFloor) {
			t.Fatalf("reply of %d bytes to %d", len(out), len(req))
		}
		if m, _ := dhcpv6.MessageFromBytes(out); m.Options.BootFileURL() != "" {
			t.Error("oversize URL sent")
		}
	})
}

// floodClient is a client with a DUID-LL of its own per i and n IA_NAs.
func floodClient(i uint32, n int) client6 {
	c := ovmf(1)
	c.duid = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}}
	c.iaids = nil
	for k := range n {
		c.iaids = append(c.iaids, [4]byte{0, 0, 1, byte(k)})
	}
	return c
}

func TestV6LeasesPersist(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases6")
	mk := func() *Server6 { return newServer6(t, func(s *Server6) { s.LeaseFile = file }) }
	s := mk()
	c := ovmf(30)
	ip, _ := boot6(t, s, c, t6)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ls, err := ReadLeaseFile(file)
	if err != nil || len(ls) != 1 || ls[0].IP != ip {
		t.Fatalf("lease file: %v %+v", err, ls)
	}
	s2 := mk()
	if l := s2.Leases(); len(l) != 1 || l[0].IP != ip || l[0].Arch != "7" {
		t.Fatalf("after restart: %+v", l)
	}
	// A Renew after the restart finds its binding; another client does
	// not get the address.
	rep := handle6(t, s2, c.msg(t, dhcpv6.MessageTypeRenew, s2.duid, ip), t6.Add(time.Minute))
	if got, st, _ := addrOfIA(t, rep); got != ip || st != iana.StatusSuccess {
		t.Errorf("Renew after restart: %v %v", got, st)
	}
	if other, _ := boot6(t, s2, ovmf(31), t6.Add(time.Minute)); other == ip {
		t.Errorf("address %v given to a second client after restart", ip)
	}
	s2.Shutdown(context.Background())
}

func TestV6JournalRecord(t *testing.T) {
	r := jrec{kind: recLease, ip: netip.MustParseAddr("2001:db8:1::100"), start: t6, expiry: t6.Add(time.Hour),
		mac: net.HardwareAddr{1, 2, 3, 4, 5, 6}, clientID: []byte{0, 0, 0, 1, 0, 3, 0, 1, 1, 2, 3, 4, 5, 6}, arch: "7"}
	b := appendRecord(nil, &r)
	if b[recHeader] != 'l' {
		t.Fatalf("kind byte %q, want 'l'", b[recHeader])
	}
	var got jrec
	if err := decodeRecord(b[recHeader:], &got); err != nil || got.ip != r.ip || got.kind != recLease || got.arch != "7" {
		t.Fatalf("round trip: %v %+v", err, got)
	}
}

func FuzzHandle6(f *testing.F) {
	t := &testing.T{}
	c := ovmf(1)
	f.Add(c.msg(t, dhcpv6.MessageTypeSolicit, nil))
	f.Add(c.msg(t, dhcpv6.MessageTypeRequest, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}, netip.MustParseAddr("2001:db8:1::100")))
	f.Add(c.msg(t, dhcpv6.MessageTypeInformationRequest, nil))
	f.Add([]byte{1, 0, 0, 0})
	s := &Server6{
		Interfaces: []string{"lab0"}, Prefix: netip.MustParsePrefix("2001:db8:1::/64"),
		RangeStart: netip.MustParseAddr("2001:db8:1::100"), RangeEnd: netip.MustParseAddr("2001:db8:1::10f"),
		DUID: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}, Rate: -1, RapidCommit: true,
	}
	now := t6
	f.Fuzz(func(t *testing.T, pkt []byte) {
		now = now.Add(time.Second)
		out, err := s.Handle(pkt, in6, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > max(replyFactor*len(pkt), replyFloor) {
			t.Fatalf("reply of %d bytes to %d", len(out), len(pkt))
		}
		if out != nil {
			if _, err := dhcpv6.MessageFromBytes(out); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
		}
		if n := len(s.leases.byKey); n > 4096 {
			t.Fatal(fmt.Sprint("table grew to ", n))
		}
	})
}

// TestV6RangeCap: a range of maxRange6 addresses is served, one more is
// refused (each address can hold a binding a Solicit flood fills).
func TestV6RangeCap(t *testing.T) {
	first := netip.MustParseAddr("2001:db8:1::1:0")
	for last, ok := range map[string]bool{"2001:db8:1::1:ffff": true, "2001:db8:1::2:0": false} {
		s := &Server6{Interfaces: []string{"lab0"}, Prefix: netip.MustParsePrefix("2001:db8:1::/64"), RangeStart: first, RangeEnd: netip.MustParseAddr(last)}
		if err := s.setup(); (err == nil) != ok {
			t.Errorf("range %v-%s: %v, want accepted %v", first, last, err, ok)
		}
	}
}
