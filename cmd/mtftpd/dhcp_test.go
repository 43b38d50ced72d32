package main

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/rs/zerolog"

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
