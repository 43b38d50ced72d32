package main

import (
	"net"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/mirror"
)

// newTemplates turns [templates] and the [[dhcp.host]] table into the
// mirror's per-host templates, or nil when templates.dir is empty.
func newTemplates(c config.Config, log zerolog.Logger, d *dhcp.Server) *mirror.Templates {
	if c.Templates.Dir == "" {
		return nil
	}
	t := &mirror.Templates{Dir: c.Templates.Dir, HTTPBase: c.DHCP.HTTPBase, HTTPPort: int(c.HTTP.Listen.Port()), Log: log}
	for _, h := range c.DHCP.Hosts {
		t.Hosts = append(t.Hosts, mirror.Host{MAC: net.HardwareAddr(h.MAC), IP: h.IP, Hostname: h.Hostname, Vars: h.Vars})
	}
	if d != nil {
		t.Leases = dhcpLeases{d}
	}
	return t
}

// dhcpLeases lets the templates ask the DHCP server who holds an address.
type dhcpLeases struct{ s *dhcp.Server }

func (d dhcpLeases) Lookup(ip netip.Addr) (mirror.Lease, bool) {
	l, ok := d.s.LeaseOf(ip, time.Now())
	return mirror.Lease{MAC: l.MAC, Hostname: l.Hostname, Arch: l.Arch}, ok
}
