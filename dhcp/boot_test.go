package dhcp

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestClassifyClient(t *testing.T) {
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want Client
	}{
		{"plain", nil, Client{}},
		{"BIOS PXE", biosPXE(), Client{Arch: []uint16{0}, VendorClass: "PXEClient:Arch:00000:UNDI:002001", PXE: true}},
		{"UEFI HTTP", httpBoot(), Client{Arch: []uint16{16}, VendorClass: "HTTPClient:Arch:00016:UNDI:003000", HTTPClient: true}},
		{"iPXE raw 77 and 175", ipxe(), Client{Arch: []uint16{7}, VendorClass: "PXEClient:Arch:00007:UNDI:003010", PXE: true, IPXE: true, UserClass: []string{"iPXE"}}},
		{"iPXE RFC 3004 77", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", true)}, Client{IPXE: true, UserClass: []string{"iPXE"}}},
		{"RFC 3004 77, two classes", []dhcpv4.Modifier{opt(optUserClass, []byte("\x03foo\x04iPXE"))}, Client{IPXE: true, UserClass: []string{"foo", "iPXE"}}},
		{"175 only", []dhcpv4.Modifier{opt(optIPXEEncap, []byte{0x15, 1, 1})}, Client{IPXE: true}},
		{"77 not iPXE", []dhcpv4.Modifier{opt(optUserClass, []byte("iPXE2"))}, Client{UserClass: []string{"iPXE2"}}},
		{"arch from 60 without 93", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00011:UNDI:003000"))},
			Client{Arch: []uint16{11}, VendorClass: "PXEClient:Arch:00011:UNDI:003000", PXE: true}},
		{"93 lists two", []dhcpv4.Modifier{opt(optClientArch, []byte{0, 7, 0, 11})}, Client{Arch: []uint16{7, 11}}},
		{"93 odd length", []dhcpv4.Modifier{opt(optClientArch, []byte{0, 7, 0})}, Client{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ClassifyClient(build(t, dhcpv4.MessageTypeDiscover, mac(1), tt.mods...))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestDefaultRules is docs/protocols.md §9.10's table.
func TestDefaultRules(t *testing.T) {
	rs, err := compileRules(DefaultBootRules())
	if err != nil {
		t.Fatal(err)
	}
	v := BootVars{HTTP: "http://192.0.2.1", MAC: "52:54:00:12:00:01"}
	pxe := func(arch uint16) Client { return Client{Arch: []uint16{arch}, PXE: true} }
	tests := []struct {
		name   string
		c      Client
		rule   string
		file   string
		answer bool
	}{
		{"BIOS", pxe(0), "bios", "undionly.kpxe", true},
		{"UEFI IA32", pxe(6), "uefi-ia32", "ipxe-i386.efi", true},
		{"UEFI x64", pxe(7), "uefi-x64", "ipxe.efi", true},
		{"UEFI x64 as EFI BC (errata 4624)", pxe(9), "uefi-x64", "ipxe.efi", true},
		{"UEFI ARM32", pxe(10), "uefi-arm32", "snp-arm32.efi", true},
		{"UEFI ARM64", pxe(11), "uefi-arm64", "snp-arm64.efi", true},
		{"HTTP x64", Client{Arch: []uint16{16}, HTTPClient: true}, "http-x64", "http://192.0.2.1/ipxe.efi", true},
		{"HTTP ARM64", Client{Arch: []uint16{19}, HTTPClient: true}, "http-arm64", "http://192.0.2.1/snp-arm64.efi", true},
		{"iPXE on BIOS", Client{Arch: []uint16{0}, PXE: true, IPXE: true}, "ipxe-script", "http://192.0.2.1/boot.ipxe?mac=52:54:00:12:00:01", true},
		{"iPXE on ARM64", Client{Arch: []uint16{11}, PXE: true, IPXE: true}, "ipxe-script", "http://192.0.2.1/boot.ipxe?mac=52:54:00:12:00:01", true},
		{"iPXE, no arch", Client{PXE: true, IPXE: true}, "ipxe-script", "http://192.0.2.1/boot.ipxe?mac=52:54:00:12:00:01", true},
		{"HTTP boot with a TFTP arch", Client{Arch: []uint16{7}, HTTPClient: true}, "", "", false},
		{"EFI Itanium", pxe(2), "", "", false},
		{"RISC-V 64", pxe(27), "", "", false},
		{"no arch", Client{PXE: true}, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, ok, err := rs.decide(tt.c, v)
			if err != nil || ok != tt.answer || b.Rule != tt.rule || b.File != tt.file {
				t.Errorf("got %+v ok=%v err=%v, want rule %q file %q ok=%v", b, ok, err, tt.rule, tt.file, tt.answer)
			}
		})
	}
}

// The default rules never hand iPXE an iPXE binary, whatever it claims.
func TestDefaultRulesNoChainLoop(t *testing.T) {
	rs, _ := compileRules(DefaultBootRules())
	for arch := range uint16(64) {
		for _, http := range []bool{false, true} {
			c := Client{Arch: []uint16{arch}, PXE: !http, HTTPClient: http, IPXE: true}
			b, ok, _ := rs.decide(c, BootVars{HTTP: "http://m"})
			if !ok || b.Rule != "ipxe-script" {
				t.Errorf("iPXE arch %d http %v: %+v ok=%v, want the script", arch, http, b, ok)
			}
		}
	}
}

func TestCustomRulesAndHosts(t *testing.T) {
	no := ptr(false)
	rules := append([]BootRule{
		{Name: "embedded", UserClass: "Tinkerbell", File: "{{.HTTP}}/auto.ipxe?ip={{.IP}}&arch={{.Arch}}&host={{.Hostname}}&role={{.Vars.role}}"},
		{Name: "pxelinux", Arch: []uint16{0}, IPXE: no, File: "pxelinux.cfg/01-{{.MACDash}}"},
	}, DefaultBootRules()...)
	s := newServer(t, func(s *Server) {
		s.Rules = rules
		s.HTTPBase = "http://mirror.lab.test:8080/"
		s.Hosts = []Host{
			{MAC: mac(1), Hostname: "n1", Vars: map[string]string{"role": "db"}},
			{MAC: mac(2), BootFile: "hosts/{{.MACDash}}/grubx64.efi"},
		}
	})
	tc := []dhcpv4.Modifier{dhcpv4.WithUserClass("Tinkerbell", true)}
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), append(uefiX64(), tc...)...), inBcast, t0)
	if want := "http://mirror.lab.test:8080/auto.ipxe?ip=192.0.2.100&arch=7&host=n1&role=db"; o.Pkt.BootFileName != want {
		t.Errorf("custom class: file %q, want %q", o.Pkt.BootFileName, want)
	}
	if got := addrOf(o.Pkt.ServerIPAddr); got != srvIP {
		t.Errorf("URL with a host name: siaddr %v, want the receiving address", got)
	}
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(3), biosPXE()...), inBcast, t0)
	if want := "pxelinux.cfg/01-52-54-00-12-00-03"; o.Pkt.BootFileName != want {
		t.Errorf("BIOS: file %q, want %q", o.Pkt.BootFileName, want)
	}
	// Host boot file: for the firmware, not for iPXE.
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2), uefiX64()...), inBcast, t0)
	if want := "hosts/52-54-00-12-00-02/grubx64.efi"; o.Pkt.BootFileName != want {
		t.Errorf("host file %q, want %q", o.Pkt.BootFileName, want)
	}
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2), ipxe()...), inBcast, t0)
	if !strings.HasSuffix(o.Pkt.BootFileName, "/boot.ipxe?mac=52:54:00:12:00:02") {
		t.Errorf("iPXE on a host with a boot file got %q, want the script", o.Pkt.BootFileName)
	}
	// A rule with an empty File: an address and no boot information.
	s2 := newServer(t, func(s *Server) { s.Rules = []BootRule{{Name: "none"}} })
	o = handle(t, s2, build(t, dhcpv4.MessageTypeDiscover, mac(1), biosPXE()...), inBcast, t0)
	if o == nil || o.Pkt.BootFileName != "" || o.Pkt.Options[optVendorClass] != nil {
		t.Errorf("empty File: %v", o)
	}
	if o.Pkt.Options[optIPXEEncap] != nil {
		t.Errorf("empty File, PXE ROM: option 175 %x, want none", o.Pkt.Options[optIPXEEncap])
	}
	// iPXE with no boot answer is told to skip its 2 s ProxyDHCP wait
	// (docs/protocols.md §13.2); with one, 60 PXEClient does that.
	o = handle(t, s2, build(t, dhcpv4.MessageTypeDiscover, mac(1), ipxe()...), inBcast, t0)
	if got := o.Pkt.Options[optIPXEEncap]; string(got) != "\xb0\x01\x01" {
		t.Errorf("empty File, iPXE: option 175 %x, want b00101 (176: 1)", got)
	}
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), ipxe()...), inBcast, t0)
	if got := o.Pkt.Options[optIPXEEncap]; got != nil || string(o.Pkt.Options[optVendorClass]) != vendorPXE || o.Pkt.ServerIPAddr.IsUnspecified() {
		t.Errorf("iPXE with a script: option 175 %x, 60 %q, siaddr %v; want none, PXEClient, set", got, o.Pkt.Options[optVendorClass], o.Pkt.ServerIPAddr)
	}
}

// Boot replies in full DHCP mode carry siaddr, file, 60, 97, 43 and 66/67
// as docs/protocols.md §9.4, §9.7, §9.8 say.
func TestBootReplyFields(t *testing.T) {
	tftp := netip.MustParseAddr("192.0.2.69")
	tests := []struct {
		name   string
		cfg    func(*Server)
		mods   []dhcpv4.Modifier
		siaddr netip.Addr
		file   string // the `file` field
		opt67  string // "" = absent
		opt66  string
		vendor string
		has43  bool
	}{
		{"BIOS, 66/67 requested", nil, biosPXE(), srvIP, "undionly.kpxe", "undionly.kpxe", "192.0.2.1", "PXEClient", true},
		{"BIOS, 55 without 66/67", nil, append(biosPXE(), opt(optParamRequest, []byte{1, 3, 43, 60})), srvIP, "undionly.kpxe", "", "", "PXEClient", true},
		{"UEFI x64, TFTPServer set", func(s *Server) { s.TFTPServer = tftp }, uefiX64(), tftp, "ipxe.efi", "ipxe.efi", "192.0.2.69", "PXEClient", true},
		{"UEFI ARM64", nil, uefiARM64(), srvIP, "snp-arm64.efi", "snp-arm64.efi", "192.0.2.1", "PXEClient", true},
		{"HTTP Boot, 67 even unasked", nil, append(httpBoot(), opt(optParamRequest, []byte{1, 3})), srvIP, "http://192.0.2.1/ipxe.efi", "http://192.0.2.1/ipxe.efi", "", "HTTPClient", false},
		{"HTTP Boot, mirror by address", func(s *Server) { s.HTTPBase = "http://198.51.100.80:8080" }, httpBoot(), netip.MustParseAddr("198.51.100.80"),
			"http://198.51.100.80:8080/ipxe.efi", "http://198.51.100.80:8080/ipxe.efi", "198.51.100.80", "HTTPClient", false},
		{"iPXE", nil, ipxe(), srvIP, "http://192.0.2.1/boot.ipxe?mac=52:54:00:12:00:01", "http://192.0.2.1/boot.ipxe?mac=52:54:00:12:00:01", "192.0.2.1", "PXEClient", true},
		{"URL longer than file", func(s *Server) { s.HTTPBase = "http://192.0.2.1/" + strings.Repeat("x", 120) },
			append(ipxe(), opt(optParamRequest, []byte{1, 3})), srvIP, "", "http://192.0.2.1/" + strings.Repeat("x", 120) + "/boot.ipxe?mac=52:54:00:12:00:01", "", "PXEClient", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck} {
				var o *Outgoing
				if mt == dhcpv4.MessageTypeOffer {
					o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), tt.mods...), inBcast, t0)
				} else {
					o = dora(t, s, mac(1), inBcast, t0, tt.mods...)
				}
				p := o.Pkt
				if got := addrOf(p.ServerIPAddr); got != tt.siaddr {
					t.Errorf("%v siaddr %v, want %v", mt, got, tt.siaddr)
				}
				if p.BootFileName != tt.file {
					t.Errorf("%v file %q, want %q", mt, p.BootFileName, tt.file)
				}
				checkStr(t, p, optBootFile, tt.opt67, true)
				checkStr(t, p, optTFTPServer, tt.opt66, true)
				checkStr(t, p, optVendorClass, tt.vendor, false)
				if got := p.Options[optVendorSpecif]; tt.has43 != (got != nil) || (tt.has43 && !bytes.Equal(got, []byte{6, 1, 8, 255})) {
					t.Errorf("%v option 43 = %v, want {6:8}+end: %v", mt, got, tt.has43)
				}
				if !bytes.Equal(p.Options[optClientUUID], uuid97) {
					t.Errorf("%v option 97 not echoed: %v", mt, p.Options[optClientUUID])
				}
				if len(p.Options[optLeaseTime]) != 4 {
					t.Errorf("%v: no lease time", mt)
				}
			}
		})
	}
}

// checkStr checks a string option; nul: it must end in one NUL
// (docs/protocols.md §8.5).
func checkStr(t *testing.T, p *dhcpv4.DHCPv4, code uint8, want string, nul bool) {
	t.Helper()
	v, ok := p.Options[code]
	if want == "" {
		if ok {
			t.Errorf("option %d = %q, want absent", code, v)
		}
		return
	}
	if nul {
		want += "\x00"
	}
	if string(v) != want {
		t.Errorf("option %d = %q, want %q", code, v, want)
	}
}

func TestUnknownArchNotAnswered(t *testing.T) {
	for _, mode := range []Mode{ModeServer, ModeProxy} {
		s := newServer(t, func(s *Server) { s.Mode = mode })
		d := build(t, dhcpv4.MessageTypeDiscover, mac(1), pxeOpts(2, "PXEClient:Arch:00002:UNDI:003000")...)
		if o := handle(t, s, d, inBcast, t0); o != nil {
			t.Errorf("%s: answered arch 2 with %q", mode, o.Pkt.BootFileName)
		}
		if s.Counters.NoArch.Load() != 1 {
			t.Errorf("%s: NoArch = %d", mode, s.Counters.NoArch.Load())
		}
	}
}

func TestArchCounters(t *testing.T) {
	s := newServer(t, nil)
	for i, mods := range [][]dhcpv4.Modifier{biosPXE(), uefiX64(), uefiARM64(), httpBoot(), ipxe(), ipxe(), nil} {
		handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(i), mods...), inBcast, t0)
	}
	c := &s.Counters
	got := []uint64{c.ArchBIOS.Load(), c.ArchUEFI64.Load(), c.ArchUEFIARM64.Load(), c.ArchHTTP.Load(), c.ArchIPXE.Load(), c.Offer.Load()}
	if want := []uint64{1, 1, 1, 1, 2, 7}; !slices.Equal(got, want) {
		t.Errorf("BIOS, UEFI64, ARM64, HTTP, iPXE, offers = %v, want %v", got, want)
	}
}

// TestGoldenReplies pins every byte that matters of the replies to each
// kind of client, in both modes (testdata/replies.golden; -update
// rewrites it).
func TestGoldenReplies(t *testing.T) {
	clients := []struct {
		name string
		mods []dhcpv4.Modifier
	}{
		{"bios", biosPXE()},
		{"uefi-ia32", pxeOpts(6, "PXEClient:Arch:00006:UNDI:003000")},
		{"uefi-x64", uefiX64()},
		{"uefi-arm32", pxeOpts(10, "PXEClient:Arch:00010:UNDI:003000")},
		{"uefi-arm64", uefiARM64()},
		{"http-x64", httpBoot()},
		{"http-arm64", pxeOpts(19, "HTTPClient:Arch:00019:UNDI:003000")},
		{"ipxe-raw77-175", ipxe()},
		{"ipxe-rfc3004-77", append(uefiX64(), dhcpv4.WithUserClass("iPXE", true))},
		{"ipxe-175-only", append(biosPXE(), opt(optIPXEEncap, []byte{0x15, 1, 1}))},
		{"unknown-arch", pxeOpts(27, "PXEClient:Arch:00027:UNDI:003000")},
		{"plain", nil},
	}
	var out bytes.Buffer
	for _, mode := range []Mode{ModeServer, ModeProxy} {
		for i, c := range clients {
			s := newServer(t, func(s *Server) { s.Mode = mode })
			hw := mac(i)
			fmt.Fprintf(&out, "== %s %s\n", mode, c.name)
			d := build(t, dhcpv4.MessageTypeDiscover, hw, c.mods...)
			o := handle(t, s, d, inBcast, t0)
			describe(&out, "DISCOVER", o)
			if o == nil {
				continue
			}
			in := inBcast
			var r *dhcpv4.DHCPv4
			if mode == ModeServer {
				r = selecting(t, hw, o, in, c.mods...)
			} else {
				ci := netip.MustParseAddr("192.0.2.77")
				in = Incoming{IfIndex: 3, IfAddr: srvIP, Src: netip.AddrPortFrom(ci, 68), Port: PortProxy}
				r = build(t, dhcpv4.MessageTypeRequest, hw, append(c.mods, dhcpv4.WithClientIP(ci.AsSlice()),
					dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice())))...)
			}
			describe(&out, "REQUEST", handle(t, s, r, in, t0))
		}
	}
	path := filepath.Join("testdata", "replies.golden")
	if *update {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGoldenReplies -update)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("replies differ from %s (-update to accept):\n%s", path, out.Bytes())
	}
}

func describe(w *bytes.Buffer, what string, o *Outgoing) {
	if o == nil {
		fmt.Fprintf(w, "%s: no reply\n", what)
		return
	}
	p := o.Pkt
	fmt.Fprintf(w, "%s: %v to %v if %d, %d bytes, flags %#04x ciaddr %v yiaddr %v siaddr %v giaddr %v file %q\n",
		what, p.MessageType(), o.Dst, o.IfIndex, len(o.Bytes()), p.Flags, addrOf(p.ClientIPAddr), addrOf(p.YourIPAddr),
		addrOf(p.ServerIPAddr), addrOf(p.GatewayIPAddr), p.BootFileName)
	for _, code := range slices.Sorted(maps.Keys(p.Options)) {
		fmt.Fprintf(w, "  %3d % x\n", code, p.Options[code])
	}
}

// A custom rule order that would hand iPXE its own binary is refused at
// answer time: the client gets no boot file rather than a loop.
func TestCustomRuleChainLoopRefused(t *testing.T) {
	s := newServer(t, func(s *Server) {
		s.Rules = []BootRule{{Name: "uefi", Arch: []uint16{7, 9}, File: "ipxe.efi"}}
	})
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(5), append(uefiX64(), ipxe()...)...), inBcast, t0)
	if o != nil && o.Pkt.BootFileName != "" {
		t.Fatalf("iPXE was handed %q", o.Pkt.BootFileName)
	}
	if s.Counters.LoopRefused.Load() != 1 {
		t.Fatalf("LoopRefused = %d", s.Counters.LoopRefused.Load())
	}
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(6), uefiX64()...), inBcast, t0)
	if o == nil || o.Pkt.BootFileName != "ipxe.efi" {
		t.Fatalf("firmware must still get ipxe.efi: %+v", o)
	}
	for f, want := range map[string]bool{"ipxe.efi": true, "undionly.kpxe": true, "x/snp-arm64.efi": true,
		"http://m/ipxe.efi?x=1": true, "pxelinux.0": false, "boot.ipxe": false, "grubx64.efi": false, "http://m/boot.ipxe": false} {
		if isIPXEBinary(f) != want {
			t.Errorf("isIPXEBinary(%q) = %v", f, !want)
		}
	}
}
