package main

import (
	"encoding/binary"
	"net"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/mtftp"
)

// newDHCP turns the validated [dhcp] section into a dhcp.Server, or nil
// when mode is off. With a PXE MTFTP listener (mc with mtftp.pxe_listen),
// BIOS PXE ROMs are told their boot file's group in option 43.1–43.5.
func newDHCP(c config.Config, log zerolog.Logger, mc *mtftp.Server) *dhcp.Server {
	d := c.DHCP
	if d.Mode == "off" {
		return nil
	}
	s := &dhcp.Server{
		Mode: dhcp.Mode(d.Mode), Interfaces: d.Interfaces, HTTPBase: d.HTTPBase, TFTPServer: d.TFTPServer,
		LeaseFile: d.LeaseFile, MaxPerMAC: d.MaxPerMAC, Addr: d.Listen, ProxyPort: d.ProxyPort, Log: log,
		Relays: config.Prefixes(d.Relays), Rules: bootRules(d.Boot),
	}
	if d.HTTPBase == "" {
		s.HTTPPort = int(c.HTTP.Listen.Port())
	}
	if m := c.MTFTP; mc != nil && m.PXEListen.IsValid() {
		s.PXEMTFTP = &dhcp.PXEMTFTP{Groups: mc, PortOrder: binary.BigEndian,
			ListenTimeout: time.Duration(m.PXETmout) * time.Second, ReopenDelay: time.Duration(m.PXEDelay) * time.Second}
		if m.PXEPortOrder == "le" {
			s.PXEMTFTP.PortOrder = binary.LittleEndian
		}
	}
	for _, sn := range d.Subnets {
		s.Subnets = append(s.Subnets, dhcp.Subnet{Prefix: sn.Prefix, RangeStart: sn.Range.First, RangeEnd: sn.Range.Last,
			Router: sn.Router, DNS: sn.DNS, Domain: sn.Domain, LeaseTime: sn.LeaseTime.Duration})
	}
	s.Hosts = hosts(d.Hosts)
	return s
}

// hosts converts [[dhcp.host]], the one host table of DHCP and DHCPv6.
func hosts(hs []config.DHCPHost) []dhcp.Host {
	var out []dhcp.Host
	for _, h := range hs {
		out = append(out, dhcp.Host{MAC: net.HardwareAddr(h.MAC), IP: h.IP, Hostname: h.Hostname, BootFile: h.BootFile, Vars: h.Vars})
	}
	return out
}

// newDHCP6 turns the validated [dhcp6] section into a dhcp.Server6; the
// boot rules are [[dhcp.boot]]'s, one set for both families.
func newDHCP6(c config.Config, log zerolog.Logger) *dhcp.Server6 {
	d := c.DHCP6
	s := &dhcp.Server6{
		Interfaces: d.Interfaces, Prefix: d.Prefix, RangeStart: d.Range.First, RangeEnd: d.Range.Last,
		LeaseTime: d.LeaseTime.Duration, DNS: d.DNS, Rules: bootRules(c.DHCP.Boot), Hosts: hosts(c.DHCP.Hosts), TFTPServer: d.TFTPServer,
		HTTPBase: d.HTTPBase, RapidCommit: d.RapidCommit, MaxPerDUID: d.MaxPerDUID, Rate: d.RequestRate,
		LeaseFile: d.LeaseFile, Addr: d.Listen, Log: log,
	}
	if d.RequestRate == 0 {
		s.Rate = -1 // 0 in the file means no limit
	}
	if d.DefaultArch >= 0 {
		a := uint16(d.DefaultArch)
		s.DefaultArch = &a
	}
	if d.HTTPBase == "" {
		s.HTTPPort = int(c.HTTP.Listen.Port())
	}
	return s
}

// bootRules converts [[dhcp.boot]]; nil (none) means the built-in rules.
func bootRules(rules []config.BootRule) []dhcp.BootRule {
	var out []dhcp.BootRule
	for _, r := range rules {
		out = append(out, dhcp.BootRule{Name: r.Name, Arch: r.Arch, IPXE: r.IPXE,
			HTTPClient: r.HTTPClient, UserClass: r.UserClass, File: r.File})
	}
	return out
}
