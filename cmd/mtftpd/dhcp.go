package main

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/mtftp"
)

// newDHCP turns the validated [dhcp] section into a dhcp.Server, or nil
// when mode is off. Validate has already checked every value, so the
// parse errors ignored here cannot happen. With a PXE MTFTP listener
// (mc with mtftp.pxe_listen), BIOS PXE ROMs are told their boot file's
// group in option 43.1–43.5.
func newDHCP(c config.Config, log zerolog.Logger, mc *mtftp.Server) *dhcp.Server {
	d := c.DHCP
	if d.Mode == "off" {
		return nil
	}
	s := &dhcp.Server{
		Mode: dhcp.Mode(d.Mode), Interfaces: d.Interfaces, HTTPBase: d.HTTPBase,
		LeaseFile: d.LeaseFile, MaxPerMAC: d.MaxPerMAC, Addr: d.Listen, ProxyPort: d.ProxyPort, Log: log,
		Relays: config.ParsePrefixes(d.Relays),
	}
	if d.TFTPServer != "" {
		s.TFTPServer, _ = netip.ParseAddr(d.TFTPServer)
	}
	if d.HTTPBase == "" {
		s.HTTPPort = httpPort(c)
	}
	if m := c.MTFTP; mc != nil && m.PXEListen != "" {
		s.PXEMTFTP = &dhcp.PXEMTFTP{Groups: mc, PortOrder: binary.BigEndian,
			ListenTimeout: time.Duration(m.PXETmout) * time.Second, ReopenDelay: time.Duration(m.PXEDelay) * time.Second}
		if m.PXEPortOrder == "le" {
			s.PXEMTFTP.PortOrder = binary.LittleEndian
		}
	}
	for _, sn := range d.Subnets {
		p, _ := netip.ParsePrefix(sn.Prefix)
		first, last, _ := config.ParseRange(sn.Range, p)
		out := dhcp.Subnet{Prefix: p, RangeStart: first, RangeEnd: last, Domain: sn.Domain, LeaseTime: sn.LeaseTime.Duration}
		out.Router, _ = netip.ParseAddr(sn.Router)
		for _, a := range sn.DNS {
			ip, _ := netip.ParseAddr(a)
			out.DNS = append(out.DNS, ip)
		}
		s.Subnets = append(s.Subnets, out)
	}
	for _, h := range d.Hosts {
		mac, _ := net.ParseMAC(h.MAC)
		out := dhcp.Host{MAC: mac, Hostname: h.Hostname, BootFile: h.BootFile, Vars: h.Vars}
		out.IP, _ = netip.ParseAddr(h.IP)
		s.Hosts = append(s.Hosts, out)
	}
	s.Rules = bootRules(d.Boot)
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

// httpPort is the mirror's port, for {{.HTTP}} URLs built from the
// address a request came to; 0 when the mirror is off.
func httpPort(c config.Config) int {
	if _, p, err := net.SplitHostPort(c.HTTP.Listen); err == nil {
		n, _ := strconv.Atoi(p)
		return n
	}
	return 0
}
