package dhcp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeGroups stands in for mtftp.Server: every file is on 239.255.1.7,
// client port 3005 (0x0bbd), server port 1759 (0x06df), unless refuse
// names it.
type fakeGroups struct {
	mu     sync.Mutex
	asked  []string // "file@server"
	refuse string
}

func (f *fakeGroups) PXEFileGroup(file string, server netip.Addr) (netip.AddrPort, uint16, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, file+"@"+server.String())
	if file == f.refuse {
		return netip.AddrPort{}, 0, false
	}
	return netip.MustParseAddrPort("239.255.1.7:3005"), 1759, true
}

var (
	opt43Plain = []byte{6, 1, 8, 255}
	// 43.1 group, 43.2 client port, 43.3 server port, 43.4 TMOUT 2,
	// 43.5 DELAY 2, then discovery control and the end
	// (docs/protocols.md §7.1).
	opt43MTFTPBE = []byte{1, 4, 239, 255, 1, 7, 2, 2, 0x0b, 0xbd, 3, 2, 0x06, 0xdf, 4, 1, 2, 5, 1, 2, 6, 1, 8, 255}
	opt43MTFTPLE = []byte{1, 4, 239, 255, 1, 7, 2, 2, 0xbd, 0x0b, 3, 2, 0xdf, 0x06, 4, 1, 2, 5, 1, 2, 6, 1, 8, 255}
)

// TestMTFTPOption43 checks option 43 for every kind of netboot client, in
// OFFER and ACK: PXE MTFTP sub-options 1–5 for a BIOS PXE ROM only, never
// for UEFI (arch 7 and 9: EDK2 drops such offers), iPXE (even on BIOS and
// fetching a TFTP file) or HTTP Boot.
func TestMTFTPOption43(t *testing.T) {
	tests := []struct {
		name  string
		mods  []dhcpv4.Modifier
		order binary.ByteOrder
		want  []byte // nil: no option 43
	}{
		{"BIOS PXE ROM", biosPXE(), nil, opt43MTFTPBE},
		{"BIOS PXE ROM, le ports", biosPXE(), binary.LittleEndian, opt43MTFTPLE},
		{"BIOS, arch from option 60 only", []dhcpv4.Modifier{opt(optVendorClass, []byte("PXEClient:Arch:00000:UNDI:002001"))}, nil, opt43MTFTPBE},
		{"UEFI x64 (arch 7)", uefiX64(), nil, opt43Plain},
		{"UEFI BC (arch 9)", pxeOpts(9, "PXEClient:Arch:00009:UNDI:003000"), nil, opt43Plain},
		{"UEFI ARM64", uefiARM64(), nil, opt43Plain},
		{"iPXE on BIOS, TFTP file", append(biosPXE(), opt(optUserClass, []byte("iPXE")), opt(optIPXEEncap, []byte{0x15, 1, 1})), nil, opt43Plain},
		{"iPXE on UEFI", ipxe(), nil, opt43Plain},
		{"HTTP Boot", httpBoot(), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &fakeGroups{}
			s := newServer(t, func(s *Server) {
				s.Rules = biosRules("pxelinux.0")
				s.PXEMTFTP = &PXEMTFTP{Groups: g, PortOrder: tt.order}
			})
			offer := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), tt.mods...), inBcast, t0)
			ack := dora(t, s, mac(1), inBcast, t0, tt.mods...)
			for _, o := range []*Outgoing{offer, ack} {
				got, ok := o.Pkt.Options[optVendorSpecif]
				if tt.want == nil && ok || !bytes.Equal(got, tt.want) {
					t.Errorf("%v option 43 = %v, want %v", o.Pkt.MessageType(), got, tt.want)
				}
			}
			announced := bytes.Equal(tt.want, opt43MTFTPBE) || bytes.Equal(tt.want, opt43MTFTPLE)
			if n := s.Counters.MTFTPAnnounced.Load(); announced != (n > 0) {
				t.Errorf("MTFTPAnnounced = %d", n)
			}
			if announced && (len(g.asked) == 0 || g.asked[0] != "pxelinux.0@192.0.2.1") {
				t.Errorf("groups asked %v, want pxelinux.0 at siaddr 192.0.2.1", g.asked)
			}
		})
	}
}

// biosRules: BIOS clients, iPXE or not, get file (the classic pxelinux
// workflow); the rest follow the built-in rules.
func biosRules(file string) []BootRule {
	return append([]BootRule{{Name: "bios", Arch: []uint16{0}, HTTPClient: ptr(false), File: file}}, DefaultBootRules()...)
}

// TestMTFTPNotAnnounced: without a group for the file (the PXE MTFTP
// server refused it: too big, missing, no free group), or without
// PXEMTFTP, a BIOS ROM gets plain option 43 and uses TFTP. In proxy mode
// the sub-options come with the offer and the 4011 boot-server ACK.
func TestMTFTPNotAnnounced(t *testing.T) {
	g := &fakeGroups{refuse: "big.img"}
	s := newServer(t, func(s *Server) {
		s.Rules = biosRules("big.img")
		s.PXEMTFTP = &PXEMTFTP{Groups: g}
	})
	o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), biosPXE()...), inBcast, t0)
	if got := o.Pkt.Options[optVendorSpecif]; !bytes.Equal(got, opt43Plain) || len(g.asked) != 1 {
		t.Errorf("refused file: option 43 = %v (asked %v)", got, g.asked)
	}
	s = newServer(t, func(s *Server) { s.Rules = biosRules("pxelinux.0") })
	o = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(1), biosPXE()...), inBcast, t0)
	if got := o.Pkt.Options[optVendorSpecif]; !bytes.Equal(got, opt43Plain) {
		t.Errorf("no PXEMTFTP: option 43 = %v", got)
	}

	p := newProxy(t, func(s *Server) { s.PXEMTFTP = &PXEMTFTP{Groups: &fakeGroups{}} })
	o = handle(t, p, build(t, dhcpv4.MessageTypeDiscover, mac(1), biosPXE()...), inBcast, t0)
	if got := o.Pkt.Options[optVendorSpecif]; !bytes.Equal(got, opt43MTFTPBE) {
		t.Errorf("proxy OFFER option 43 = %v", got)
	}
	ci := netip.MustParseAddr("192.0.2.77")
	o = handle(t, p, build(t, dhcpv4.MessageTypeRequest, mac(1), append(biosPXE(), dhcpv4.WithClientIP(ci.AsSlice()),
		opt(optVendorSpecif, []byte{71, 4, 0, 0, 0, 0, 255}))...), in4011, t0)
	want := append(append([]byte(nil), opt43MTFTPBE[:len(opt43MTFTPBE)-1]...), 71, 4, 0, 0, 0, 0, 255)
	if got := o.Pkt.Options[optVendorSpecif]; !bytes.Equal(got, want) {
		t.Errorf("boot-server ACK option 43 = %v, want %v", got, want)
	}
}

func TestMTFTPValidate(t *testing.T) {
	for _, tt := range []struct {
		m    PXEMTFTP
		want string
	}{
		{PXEMTFTP{}, "PXEMTFTP.Groups"},
		{PXEMTFTP{Groups: &fakeGroups{}, ListenTimeout: 1500 * time.Millisecond}, "PXEMTFTP.ListenTimeout"},
		{PXEMTFTP{Groups: &fakeGroups{}, ReopenDelay: 256 * time.Second}, "PXEMTFTP.ReopenDelay"},
	} {
		s := &Server{Subnets: labSubnets(), PXEMTFTP: &tt.m}
		if err := s.setup(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: error %v, want one naming %s", tt.m, err, tt.want)
		}
	}
	s := &Server{Subnets: labSubnets(), PXEMTFTP: &PXEMTFTP{Groups: &fakeGroups{}, ListenTimeout: 5 * time.Second}}
	if err := s.setup(); err != nil || s.mtftp.tmout != 5 || s.mtftp.delay != 2 || s.mtftp.order != binary.BigEndian {
		t.Errorf("setup: %v %+v", err, s.mtftp)
	}
}
