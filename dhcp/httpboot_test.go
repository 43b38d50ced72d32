package dhcp

import (
	"bytes"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// edk2Offer is how EDK2's HttpBootDxe classifies one DHCP offer
// (docs/protocols.md §9.8): read from the bytes on the wire, the way
// HttpBootParseDhcp4Packet does, not through this package's codec.
type edk2Offer struct {
	http, proxy, dns bool
	uri              string
	ipURI            bool   // the URI's host is an IPv4 literal: no DNS needed
	image            string // HttpBootCheckImageType by the path's extension: efi, iso, img or ""
}

// classifyEDK2 reads a BOOTREPLY as HttpBootDxe does; ok is false where
// the firmware discards the offer.
func classifyEDK2(t *testing.T, wire []byte) (o edk2Offer, ok bool) {
	t.Helper()
	const (
		fileOff, fileLen = 108, 128 // BOOTP `file` (RFC 2131 §2)
		optOff           = 240      // after the magic cookie
		maxPacket        = 1472     // HTTP_BOOT_DHCP4_PACKET_MAX_SIZE: larger offers are ignored
	)
	if len(wire) > maxPacket || len(wire) < optOff {
		return o, false
	}
	opts := map[byte][]byte{}
	for b := wire[optOff:]; len(b) > 0 && b[0] != 255; {
		if b[0] == 0 {
			b = b[1:]
			continue
		}
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			t.Fatalf("option %d overruns the packet", b[0])
		}
		if _, dup := opts[b[0]]; !dup { // the first instance, as EDK2 finds it
			opts[b[0]] = b[2 : 2+int(b[1])]
		}
		b = b[2+int(b[1]):]
	}
	if _, overload := opts[52]; overload {
		t.Fatal("option 52 (overload): mtftpd never sends it")
	}
	o.proxy = bytes.Equal(wire[16:20], []byte{0, 0, 0, 0}) // yiaddr
	// EDK2 compares the first 9 bytes of its "HTTPClient" class id.
	o.http = bytes.HasPrefix(opts[optVendorClass], []byte(vendorHTTP[:9]))
	_, o.dns = opts[optDNS]
	if f, ok := opts[optBootFile]; ok {
		o.uri, _, _ = strings.Cut(string(f), "\x00")
	} else if wire[fileOff] != 0 {
		o.uri, _, _ = strings.Cut(string(wire[fileOff:fileOff+fileLen]), "\x00")
	}
	if !o.http {
		return o, !o.proxy // a proxy offer that is not an HTTP offer is discarded
	}
	u, err := url.Parse(o.uri)
	if o.uri == "" || err != nil || u.Host == "" {
		return o, false // an HTTP offer must carry a URI the firmware parses
	}
	a, err := netip.ParseAddr(u.Hostname())
	o.ipURI = err == nil && a.Is4()
	for _, ext := range []string{"efi", "iso", "img"} {
		if strings.HasSuffix(u.Path, "."+ext) {
			o.image = ext
		}
	}
	return o, true
}

// TestHTTPBootOfferEDK2: what mtftpd sends an HTTPClient
// ("HTTPClient:Arch:00016:UNDI:003001", option 93 = 16) is an offer EDK2
// ranks first in its mode: in server mode an address offer with the URL
// by address (HttpOfferTypeDhcpIpUri[Dns]), in proxy mode yiaddr 0 with the
// URL by address (HttpOfferTypeProxyIpUri, taken together with the other
// server's address offer). The URL names an .efi file (the image type by
// extension) on the mirror, option 60 is exactly "HTTPClient", option 67
// ends in NUL, and no PXE option 43 is sent.
func TestHTTPBootOfferEDK2(t *testing.T) {
	client := pxeOpts(16, "HTTPClient:Arch:00016:UNDI:003001")
	for _, tt := range []struct {
		name string
		mode Mode
	}{{"server", ModeServer}, {"proxy", ModeProxy}} {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, func(s *Server) {
				s.HTTPBase = "http://192.0.2.1:8080"
				if tt.mode == ModeProxy {
					s.Mode, s.Subnets = ModeProxy, nil
				}
			})
			o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), client...), inBcast, t0)
			if o == nil {
				t.Fatal("no offer")
			}
			got, ok := classifyEDK2(t, o.Bytes())
			if !ok {
				t.Fatalf("EDK2 would discard this offer: %+v", got)
			}
			// The lab subnet hands out DNS servers: in server mode that is
			// HttpOfferTypeDhcpIpUriDns, ranked right after DhcpIpUri.
			want := edk2Offer{http: true, proxy: tt.mode == ModeProxy, dns: tt.mode == ModeServer, uri: "http://192.0.2.1:8080/ipxe.efi", ipURI: true, image: "efi"}
			if got != want {
				t.Errorf("EDK2 sees %+v, want %+v", got, want)
			}
			checkStr(t, o.Pkt, optVendorClass, "HTTPClient", false)
			checkStr(t, o.Pkt, optBootFile, want.uri, true)
			if _, has43 := o.Pkt.Options[optVendorSpecif]; has43 {
				t.Error("option 43 (PXE) sent to an HTTPClient")
			}
		})
	}
}

// TestHTTPBootRuleMatch: an HTTPClient is matched by its architecture
// (option 93, or the Arch field of option 60 when 93 is missing) and by
// http_client; a PXE client of the same machine is not, so the same room
// can boot both ways from one rule list.
func TestHTTPBootRuleMatch(t *testing.T) {
	rules := []BootRule{
		{Name: "http-x64", HTTPClient: ptr(true), Arch: []uint16{16}, File: "{{.HTTP}}/shim.efi?mac={{.MAC}}"},
		{Name: "uefi-x64", HTTPClient: ptr(false), Arch: []uint16{7}, File: "ipxe.efi"},
	}
	noArch93 := []dhcpv4.Modifier{opt(optVendorClass, []byte("HTTPClient:Arch:00016:UNDI:003001"))}
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		file string // "" = not answered with boot information
	}{
		{"HTTPClient arch 16", pxeOpts(16, "HTTPClient:Arch:00016:UNDI:003001"), "http://192.0.2.1/shim.efi?mac=52:54:00:12:00:01"},
		{"HTTPClient, arch only in option 60", noArch93, "http://192.0.2.1/shim.efi?mac=52:54:00:12:00:01"},
		{"PXEClient arch 7", uefiX64(), "ipxe.efi"},
		{"HTTPClient arch 19: no rule", pxeOpts(19, "HTTPClient:Arch:00019:UNDI:003001"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, func(s *Server) { s.Rules = rules })
			o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), tt.mods...), inBcast, t0)
			var got string
			if o != nil {
				got = o.Pkt.BootFileName
			}
			if got != tt.file {
				t.Errorf("file %q, want %q", got, tt.file)
			}
		})
	}
}

// TestHTTPBootNeedsURL: a rule that hands an HTTPClient a TFTP name gives
// it no boot answer (EDK2 would discard the whole offer, address and all):
// server mode offers the address alone, without option 60 HTTPClient, so
// the firmware still sees an address offer; proxy mode stays silent.
func TestHTTPBootNeedsURL(t *testing.T) {
	rules := []BootRule{{Name: "tftp-name", Arch: []uint16{16}, File: "ipxe.efi"}}
	d := build(t, dhcpv4.MessageTypeDiscover, mac(1), httpBoot()...)
	s := newServer(t, func(s *Server) { s.Rules = rules })
	o := handle(t, s, d, inBcast, t0)
	if o == nil {
		t.Fatal("server mode: no address offer")
	}
	if o.Pkt.BootFileName != "" || o.Pkt.Options[optBootFile] != nil || o.Pkt.Options[optVendorClass] != nil {
		t.Errorf("server mode: boot answer %q / %q / 60 %q", o.Pkt.BootFileName, o.Pkt.Options[optBootFile], o.Pkt.Options[optVendorClass])
	}
	if got, ok := classifyEDK2(t, o.Bytes()); !ok || got.http || got.proxy {
		t.Errorf("EDK2 sees %+v (kept %v), want a plain address offer", got, ok)
	}
	p := newProxy(t, func(s *Server) { s.Rules = rules })
	if o := handle(t, p, d, inBcast, t0); o != nil {
		t.Errorf("proxy mode answered with %q", o.Pkt.Options[optBootFile])
	}
}
