package main

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/mtftp"
)

// TestNewDHCPAnnouncesMTFTP: with a PXE MTFTP listener the DHCP server
// announces it (43.1–43.5) with the configured timers and port byte
// order; without one it announces nothing.
func TestNewDHCPAnnouncesMTFTP(t *testing.T) {
	cfg := config.Defaults()
	cfg.DHCP.Mode = "proxy"
	cfg.MTFTP.PXEListen = netip.MustParseAddrPort("192.0.2.1:1759")
	cfg.MTFTP.PXEPortOrder, cfg.MTFTP.PXETmout, cfg.MTFTP.PXEDelay = "le", 3, 7
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	mc := &mtftp.Server{}
	d := newDHCP(cfg, zerolog.Nop(), mc)
	m := d.PXEMTFTP
	if m == nil || m.Groups != mc || m.PortOrder != binary.LittleEndian || m.ListenTimeout.Seconds() != 3 || m.ReopenDelay.Seconds() != 7 {
		t.Fatalf("PXEMTFTP = %+v", m)
	}
	cfg.MTFTP.PXEPortOrder = "be"
	if m := newDHCP(cfg, zerolog.Nop(), mc).PXEMTFTP; m == nil || m.PortOrder != binary.BigEndian {
		t.Errorf("be: %+v", m)
	}
	if m := newDHCP(cfg, zerolog.Nop(), nil).PXEMTFTP; m != nil {
		t.Errorf("no mtftp server, yet PXEMTFTP = %+v", m)
	}
	cfg.MTFTP.PXEListen = netip.AddrPort{}
	if m := newDHCP(cfg, zerolog.Nop(), mc).PXEMTFTP; m != nil {
		t.Errorf("no PXE listener, yet PXEMTFTP = %+v", m)
	}
}

// TestBootRulesArchNames: [[dhcp.boot]] arch names reach the DHCP server
// as their option 93 values ("uefi-arm64" is 11, "uefi-x64" is 7 and 9).
func TestBootRulesArchNames(t *testing.T) {
	cfg := config.Defaults()
	in := "[dhcp]\nmode = \"proxy\"\n[[dhcp.boot]]\nname = \"arm\"\narch = [\"uefi-arm64\", \"uefi-x64\", 0]\nfile = \"grubnetaa64.efi\"\n"
	if err := config.Parse([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rules := newDHCP(cfg, zerolog.Nop(), nil).Rules
	if len(rules) != 1 || !slices.Equal(rules[0].Arch, []uint16{11, 7, 9, 0}) || rules[0].File != "grubnetaa64.efi" {
		t.Fatalf("rules = %+v", rules)
	}
}

// TestArchNamesMatchBuiltInRules: each arch name is a built-in rule's
// name and stands for that rule's option 93 values, so the two tables
// cannot drift apart.
func TestArchNamesMatchBuiltInRules(t *testing.T) {
	builtin := map[string][]uint16{}
	for _, r := range dhcp.DefaultBootRules() {
		builtin[r.Name] = r.Arch
	}
	for _, name := range config.ArchNames() {
		want, ok := builtin[name]
		if !ok {
			t.Errorf("arch name %q is no built-in rule's name", name)
			continue
		}
		var got config.ArchList
		if err := got.UnmarshalTOML([]any{name}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("arch name %q = %v, the built-in rule matches %v", name, got, want)
		}
	}
}
