package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// reporter collects Validate's problems, each naming its key.
type reporter func(key, format string, args ...any)

// Validate returns every problem, each naming its key and the bad value.
// It is the only check of the config: the values it passes are what
// the services are built from, unchecked again. Addresses and prefixes
// arrive parsed (types.go); here they are checked against their use.
func (c *Config) Validate() error {
	var errs []error
	bad := reporter(func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	})
	c.validateTFTP(bad)
	c.validateWriteDir(bad)
	c.validateHTTP(bad)
	c.validateMTFTP(bad)
	c.validateDHCP(bad)
	c.validateDHCP6(bad)
	c.validateOrigin(bad)
	c.validateImaging(bad)
	c.validateProcess(bad)
	return errors.Join(errs...)
}

// checkListen checks a listen address: set (unless it may be empty),
// IPv4 when the service is, never v4-mapped (write the IPv4 address; [::]
// is the dual-stack one, docs/design.md "IPv6").
func checkListen(bad reporter, key string, a netip.AddrPort, optional, v4 bool) {
	switch {
	case !a.IsValid() && optional:
	case !a.IsValid():
		bad(key, "must be set, like 0.0.0.0:69 or [::]:69")
	case v4 && !a.Addr().Is4():
		bad(key, "%s is not an IPv4 address and port (the service is IPv4 only)", a)
	case a.Addr().Is4In6():
		bad(key, "%s is a v4-mapped address: write %s (IPv4 only) or [::]:%d (IPv6 and IPv4)", a, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), a.Port())
	}
}

func (c *Config) validateTFTP(bad reporter) {
	t := &c.TFTP
	checkListen(bad, "tftp.listen", t.Listen, false, false)
	if t.Root == "" {
		bad("tftp.root", "must not be empty")
	}
	if t.MaxBlockSize < 8 || t.MaxBlockSize > 65464 {
		bad("tftp.max_blksize", "%d is outside 8..65464 (RFC 2348)", t.MaxBlockSize)
	}
	if t.MaxWindow < 1 || t.MaxWindow > 65535 {
		bad("tftp.max_windowsize", "%d is outside 1..65535 (RFC 7440)", t.MaxWindow)
	}
	if t.MaxWindowBytes < 512 {
		bad("tftp.max_window_bytes", "%d is below one 512-byte block", t.MaxWindowBytes)
	}
	checkMin(bad, "tftp.max_upload_size", t.MaxUploadSize, 0, "is negative")
	checkMin(bad, "tftp.write_quota", t.WriteQuota, 0, "is negative (0 = no quota)")
	checkMin(bad, "tftp.max_requests_per_sec", int64(t.MaxRequestRate), 0, "is negative (0 = unlimited)")
	checkMin(bad, "tftp.request_burst", int64(t.RequestBurst), 0, "is negative")
	for _, n := range []struct {
		key string
		v   int
	}{
		{"tftp.max_sessions", t.MaxSessions}, {"tftp.max_per_client", t.MaxPerClient},
		{"tftp.max_unconfirmed", t.MaxUnconfirmed}, {"tftp.max_unconfirmed_per_prefix", t.MaxUnconfirmedPerPrefix},
	} {
		checkMin(bad, n.key, int64(n.v), 1, "must be at least 1")
	}
	checkRange(bad, "tftp.retries", t.Retries, 1, 100)
	for _, d := range []struct {
		key      string
		v        Duration
		positive bool
	}{
		{"tftp.min_rto", t.MinRTO, true}, {"tftp.confirm_timeout", t.ConfirmTimeout, true}, {"tftp.session_lifetime", t.Lifetime, true},
		{"tftp.stall_timeout", t.StallTimeout, false}, {"tftp.shutdown_grace", t.ShutdownGrace, false},
	} {
		if d.positive && d.v.Duration <= 0 {
			bad(d.key, "%s must be positive", d.v)
		} else if d.v.Duration < 0 {
			bad(d.key, "%s is negative", d.v)
		}
	}
	if t.MaxRTO.Duration < t.MinRTO.Duration {
		bad("tftp.max_rto", "%s is below min_rto %s", t.MaxRTO, t.MinRTO)
	}
	if t.InitialRTO.Duration < t.MinRTO.Duration || t.InitialRTO.Duration > t.MaxRTO.Duration {
		bad("tftp.initial_rto", "%s is outside min_rto..max_rto (%s..%s)", t.InitialRTO, t.MinRTO, t.MaxRTO)
	}
}

// checkMin reports a number below lo; problem says what is wrong.
func checkMin(bad reporter, key string, v, lo int64, problem string) {
	if v < lo {
		bad(key, "%d %s", v, problem)
	}
}

func (c *Config) validateHTTP(bad reporter) {
	h := &c.HTTP
	checkListen(bad, "http.listen", h.Listen, true, false)
	if h.MaxConns < 1 {
		bad("http.max_conns", "%d must be at least 1", h.MaxConns)
	}
	if h.MaxConnsPerIP < 1 || h.MaxConnsPerIP > h.MaxConns {
		bad("http.max_conns_per_ip", "%d is outside 1..http.max_conns (%d)", h.MaxConnsPerIP, h.MaxConns)
	}
	for i, n := range h.APIAllow {
		if !n.IsValid() {
			bad(fmt.Sprintf("http.api_allow[%d]", i), "is empty: give an address or prefix like 192.0.2.0/24")
		}
	}
	for i, name := range h.APIHosts {
		if name == "" || strings.ContainsAny(name, ":/[] \t") {
			bad(fmt.Sprintf("http.api_hosts[%d]", i), "%q is not a host name like boot.example.org", name)
		}
	}
}

func (c *Config) validateProcess(bad reporter) {
	if c.Server.Group != "" && c.Server.User == "" {
		bad("server.group", "%q is set without server.user", c.Server.Group)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", "%q is not console or json", c.Log.Format)
	}
}

// validateWriteDir refuses an upload directory that overlaps a served
// tree (either inside the other): an upload named pxelinux.cfg/01-<mac>
// would take over that machine's boot (issue 13, finding 11). Paths are
// compared as written (made absolute) and, where they exist, with their
// symlinks resolved (lstat and readlink only: no file is opened).
func (c *Config) validateWriteDir(bad reporter) {
	w := c.TFTP.WriteDir
	if w == "" {
		return
	}
	served := []struct{ field, dir string }{
		{"tftp.root", c.TFTP.Root}, {"http.root", c.HTTP.Root}, {"templates.dir", c.Templates.Dir},
	}
	if IsURL(c.TFTP.Root) || IsURL(c.HTTP.Root) {
		// Files fetched from an origin are served from the cache.
		served = append(served, struct{ field, dir string }{"origin.cache_dir", c.Origin.CacheDir})
	}
	for _, s := range served {
		if s.dir == "" || IsURL(s.dir) {
			continue
		}
		if overlaps(w, s.dir) {
			bad("tftp.write_dir", "%q overlaps %s %q (one inside the other): an upload could replace a served file", w, s.field, s.dir)
		}
	}
}

// overlaps reports whether directory a is b, or inside it, or contains it.
func overlaps(a, b string) bool {
	forms := func(p string) []string {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil
		}
		out := []string{abs}
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			out = append(out, r)
		}
		return out
	}
	within := func(p, dir string) bool {
		return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
	}
	for _, x := range forms(a) {
		for _, y := range forms(b) {
			if within(x, y) || within(y, x) {
				return true
			}
		}
	}
	return false
}

func (c *Config) validateOrigin(bad reporter) {
	urls := false
	for _, r := range []struct{ field, root string }{{"tftp.root", c.TFTP.Root}, {"http.root", c.HTTP.Root}} {
		if !IsURL(r.root) {
			continue
		}
		urls = true
		if u, err := url.Parse(r.root); err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(r.field, "%q is not an http(s) URL without query like http://origin.example:8080/boot/", r.root)
		}
	}
	o := &c.Origin
	if urls && o.CacheDir == "" {
		bad("origin.cache_dir", "must be set when tftp.root or http.root is an http(s) URL")
	}
	if o.TTL.Duration < 0 {
		bad("origin.ttl", "%s is negative", o.TTL)
	}
	if o.Timeout.Duration <= 0 {
		bad("origin.timeout", "%s must be positive", o.Timeout)
	}
	if o.MaxSize < 0 {
		bad("origin.max_size", "%d is negative (0 = no cap)", o.MaxSize)
	}
	if o.NegativeTTL.Duration < 0 {
		bad("origin.negative_ttl", "%s is negative (0 = failures are not remembered)", o.NegativeTTL)
	}
	if o.Wait.Duration <= 0 {
		bad("origin.wait", "%s must be positive", o.Wait)
	}
}

// mcastScope is the only multicast range mtftpd sends to (RFC 2365
// organisation-local scope).
var mcastScope = netip.MustParsePrefix("239.255.0.0/16")

// checkGroups checks a multicast group pool: set, IPv4, inside mcastScope.
func checkGroups(bad reporter, key string, p netip.Prefix, example string) bool {
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		bad(key, "%q is not an IPv4 prefix like %s", p, example)
	case p.Bits() < mcastScope.Bits() || !mcastScope.Contains(p.Addr()):
		bad(key, "%s is not inside %s", p, mcastScope)
	default:
		return true
	}
	return false
}

// checkRange checks an int key against lo..hi.
func checkRange(bad reporter, key string, v, lo, hi int) {
	if v < lo || v > hi {
		bad(key, "%d is outside %d..%d", v, lo, hi)
	}
}

// checkWait checks a start-policy duration: 0s..1h.
func checkWait(bad reporter, key string, d Duration) {
	if d.Duration < 0 || d.Duration > time.Hour {
		bad(key, "%v is outside 0s..1h", d.Duration)
	}
}

func (c *Config) validateMTFTP(bad reporter) {
	m := &c.MTFTP
	groups := checkGroups(bad, "mtftp.group_range", m.GroupRange, "239.255.0.0/24")
	checkRange(bad, "mtftp.port", m.Port, 1, 65535)
	checkRange(bad, "mtftp.ttl", m.TTL, 1, 255)
	if l := m.PXEListen; l.IsValid() {
		if l.Port() == 0 {
			bad("mtftp.pxe_listen", "%s: port 0 (iPXE asks on 1759)", l)
		} else if !l.Addr().Is4() {
			bad("mtftp.pxe_listen", "%s is not an IPv4 address and port (multicast is IPv4 only)", l)
		} else if l.Addr().IsUnspecified() && m.Interface == "" {
			// The stream must leave by a known interface, never the
			// routing table's pick (it could be the uplink).
			bad("mtftp.pxe_listen", "%s listens on every address: give an address (e.g. 192.0.2.1:1759) or set mtftp.interface", l)
		}
	}
	if !mcastScope.Contains(m.PXEGroup) {
		bad("mtftp.pxe_group", "%q is not a group inside %s", m.PXEGroup, mcastScope)
	}
	checkRange(bad, "mtftp.pxe_client_port", m.PXEClientPort, 1, 65535)
	checkRange(bad, "mtftp.native_rate_mbps", m.NativeRateMbps, 0, 400000)
	checkWait(bad, "mtftp.native_settle", m.NativeSettle)
	checkWait(bad, "mtftp.native_max_wait", m.NativeMaxWait)
	checkRange(bad, "mtftp.native_min_receivers", m.NativeMinReceivers, 0, 10000)
	for i, r := range m.Start {
		key := fmt.Sprintf("mtftp.start[%d]", i)
		if _, err := path.Match(r.Files, ""); err != nil || r.Files == "" {
			bad(key+".files", "%q is not a file name pattern like images/*.img", r.Files)
		}
		checkRange(bad, key+".min_receivers", r.MinReceivers, 0, 10000)
		checkWait(bad, key+".max_wait", r.MaxWait)
		checkWait(bad, key+".settle", r.Settle)
	}
	if checkGroups(bad, "mtftp.pxe_file_groups", m.PXEFileGroups, "239.255.1.0/24") && groups && m.PXEFileGroups.Overlaps(m.GroupRange) {
		bad("mtftp.pxe_file_groups", "%s overlaps mtftp.group_range %s (an RFC 2090 session would share a file's group)", m.PXEFileGroups, m.GroupRange)
	}
	checkRange(bad, "mtftp.pxe_file_port", m.PXEFilePort, 1, 65535)
	if m.PXEPortOrder != "be" && m.PXEPortOrder != "le" {
		bad("mtftp.pxe_port_order", "%q is not be or le", m.PXEPortOrder)
	}
	checkRange(bad, "mtftp.pxe_tmout", m.PXETmout, 1, 255)
	checkRange(bad, "mtftp.pxe_delay", m.PXEDelay, 1, 255)
}

func (c *Config) validateDHCP(bad reporter) {
	d := &c.DHCP
	checkRange(bad, "dhcp.max_leases_per_mac", d.MaxPerMAC, 1, 1<<20)
	switch d.Mode {
	case "off", "server", "proxy":
	default:
		bad("dhcp.mode", "%q is not off, server or proxy", d.Mode)
		return
	}
	if d.RouterAdv != "auto" && d.RouterAdv != "off" {
		bad("dhcp.router_advert", "%q is not auto or off", d.RouterAdv)
	}
	// The host table also names machines for the templates, so it is
	// checked in every mode.
	c.validateHosts(bad)
	if d.Mode == "off" {
		return
	}
	checkListen(bad, "dhcp.listen", d.Listen, false, true)
	if d.Listen.IsValid() && !d.Listen.Addr().IsUnspecified() {
		// Linux never delivers 255.255.255.255 to a socket bound to a
		// unicast address: such a server would never see a DISCOVER.
		bad("dhcp.listen", "%s: DHCP must listen on 0.0.0.0 (use dhcp.interfaces to pick interfaces)", d.Listen)
	}
	for i, name := range d.Interfaces {
		if name == "" {
			bad(fmt.Sprintf("dhcp.interfaces[%d]", i), "is empty: give an interface name like eth1")
		}
	}
	for i, r := range d.Relays {
		if !r.IsValid() || !r.Addr().Is4() {
			bad(fmt.Sprintf("dhcp.relays[%d]", i), "%q is not IPv4", r)
		}
	}
	checkRange(bad, "dhcp.proxy_port", d.ProxyPort, 1, 65535)
	if d.TFTPServer.IsValid() && !d.TFTPServer.Is4() {
		bad("dhcp.tftp_server", "%s is not an IPv4 address", d.TFTPServer)
	}
	if d.HTTPBase != "" {
		if u, err := url.Parse(d.HTTPBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("dhcp.http_base", "%q is not an absolute http(s) URL", d.HTTPBase)
		}
	}
	if d.Mode == "server" && len(d.Subnets) == 0 {
		bad("dhcp.subnet", "server mode needs at least one [[dhcp.subnet]]")
	}
	for i, sn := range d.Subnets {
		validateSubnet(bad, fmt.Sprintf("dhcp.subnet[%d]", i), sn)
		for j := range i {
			if o := d.Subnets[j].Prefix; o.IsValid() && sn.Prefix.IsValid() && o.Overlaps(sn.Prefix) {
				bad(fmt.Sprintf("dhcp.subnet[%d].prefix", i), "%s overlaps dhcp.subnet[%d].prefix %s", sn.Prefix, j, o)
			}
		}
	}
	if d.Mode == "server" {
		c.validateStaticIPs(bad)
	}
	for i, r := range d.Boot {
		f := fmt.Sprintf("dhcp.boot[%d]", i)
		if _, err := template.New(f).Parse(r.File); err != nil {
			bad(f+".file", "template: %v", err)
		}
		if r.HTTPClient != nil && *r.HTTPClient && !httpBootFile(r.File) {
			bad(f+".file", "%q is not an http(s):// URL: UEFI HTTP Boot (http_client = true) needs one, like \"{{.HTTP}}/ipxe.efi\" (docs/protocols.md §9.8)", r.File)
		}
	}
}

func (c *Config) validateDHCP6(bad reporter) {
	d := &c.DHCP6
	if !d.Enabled {
		return
	}
	checkListen(bad, "dhcp6.listen", d.Listen, false, false)
	if d.Listen.IsValid() && (!d.Listen.Addr().Is6() || !d.Listen.Addr().IsUnspecified()) {
		bad("dhcp6.listen", "%s: DHCPv6 must listen on [::] (use dhcp6.interfaces to pick interfaces)", d.Listen)
	}
	if len(d.Interfaces) == 0 {
		bad("dhcp6.interfaces", "must name at least one interface, like eth1")
	}
	for i, name := range d.Interfaces {
		if name == "" {
			bad(fmt.Sprintf("dhcp6.interfaces[%d]", i), "is empty: give an interface name like eth1")
		}
	}
	p, r := d.Prefix, d.Range
	switch {
	case !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6():
		bad("dhcp6.prefix", "%q is not an IPv6 prefix like 2001:db8:1::/64", p)
	case !r.First.IsValid():
		bad("dhcp6.range", "must be set, like 2001:db8:1::100-2001:db8:1::1ff")
	case !p.Contains(r.First) || !p.Contains(r.Last):
		bad("dhcp6.range", "%q is not inside %s", r, p)
	case r.Last.Less(r.First):
		bad("dhcp6.range", "%q ends before it starts", r)
	case !netip.PrefixFrom(r.First, 96).Contains(r.Last) || low32(r.Last)-low32(r.First) >= maxRange6:
		bad("dhcp6.range", "%q must share the upper 96 bits and hold at most %d addresses", r, maxRange6)
	}
	if lt := d.LeaseTime.Duration; lt < 0 || lt/time.Second > maxLeaseSeconds {
		bad("dhcp6.lease_time", "%s is outside 0s..%ds", d.LeaseTime, maxLeaseSeconds)
	}
	for j, dns := range d.DNS {
		if !dns.Is6() || dns.Is4In6() {
			bad(fmt.Sprintf("dhcp6.dns[%d]", j), "%q is not an IPv6 address", dns)
		}
	}
	if d.TFTPServer.IsValid() && (!d.TFTPServer.Is6() || d.TFTPServer.Is4In6()) {
		bad("dhcp6.tftp_server", "%s is not an IPv6 address", d.TFTPServer)
	}
	if d.HTTPBase != "" {
		if u, err := url.Parse(d.HTTPBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("dhcp6.http_base", "%q is not an absolute http(s) URL", d.HTTPBase)
		}
	}
	checkRange(bad, "dhcp6.default_arch", d.DefaultArch, -1, 65535)
	checkRange(bad, "dhcp6.max_leases_per_duid", d.MaxPerDUID, 1, 1<<20)
	checkRange(bad, "dhcp6.request_rate", d.RequestRate, 0, 1<<20)
	if d.LeaseFile != "" && d.LeaseFile == c.DHCP.LeaseFile {
		bad("dhcp6.lease_file", "%q is dhcp.lease_file too: each server needs its own journal", d.LeaseFile)
	}
}

// low32 is an IPv6 address's last 32 bits (the DHCPv6 pool's arithmetic).
func low32(a netip.Addr) uint32 {
	b := a.As16()
	return uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])
}

// httpBootFile reports whether a boot rule's file can be a URL for UEFI
// HTTP Boot: empty (no boot answer), an http(s):// URL, or a template
// that starts with an action such as {{.HTTP}} (the dhcp package checks
// what it renders).
func httpBootFile(f string) bool {
	return f == "" || strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") || strings.HasPrefix(f, "{{")
}

// maxRangeSize caps a subnet's range: the DHCP pool's bitset takes
// 2 MiB at this size, built at start (dhcp/pool.go).
const maxRangeSize = 1 << 24

// maxRange6 caps dhcp6.range: every address can hold a binding that a
// Solicit flood of random DUIDs fills (dhcp/v6.go, docs/security.md).
const maxRange6 = 1 << 16

// maxLeaseSeconds is the longest lease DHCP option 51 can say (RFC 2132
// §9.2: 32 bits of seconds, 0xFFFFFFFF meaning infinity).
const maxLeaseSeconds = 0xFFFFFFFE

func validateSubnet(bad reporter, f string, sn DHCPSubnet) {
	p := sn.Prefix
	if !p.IsValid() || !p.Addr().Is4() {
		bad(f+".prefix", "%q is not an IPv4 prefix like 192.0.2.0/24", p)
		return
	}
	r := sn.Range
	switch {
	case !r.First.IsValid():
		bad(f+".range", "must be set, like 192.0.2.100-192.0.2.199")
	case !p.Contains(r.First) || !p.Contains(r.Last):
		bad(f+".range", "%q is not inside %s", r, p)
	case r.Last.Less(r.First):
		bad(f+".range", "%q ends before it starts", r)
	case u32(r.Last)-u32(r.First) >= maxRangeSize:
		bad(f+".range", "%q holds %d addresses: at most %d", r, uint64(u32(r.Last)-u32(r.First))+1, maxRangeSize)
	}
	if sn.Router.IsValid() && !p.Contains(sn.Router) {
		bad(f+".router", "%q is not an address in %s", sn.Router, p)
	}
	for j, dns := range sn.DNS {
		if !dns.Is4() {
			bad(fmt.Sprintf("%s.dns[%d]", f, j), "%q is not an IPv4 address", dns)
		}
	}
	if len(sn.Domain) > 255 {
		bad(f+".domain", "is %d bytes: at most 255 (DHCP option 15)", len(sn.Domain))
	}
	if lt := sn.LeaseTime.Duration; lt < 0 || lt/time.Second > maxLeaseSeconds {
		bad(f+".lease_time", "%s is outside 0s..%ds", sn.LeaseTime, maxLeaseSeconds)
	}
}

// u32 is an IPv4 address as a number.
func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (c *Config) validateHosts(bad reporter) {
	seen := map[string]int{}
	for i, h := range c.DHCP.Hosts {
		f := fmt.Sprintf("dhcp.host[%d]", i)
		if len(h.MAC) == 0 {
			bad(f+".mac", "must be set, like 52:54:00:12:34:56")
		} else if j, dup := seen[h.MAC.String()]; dup {
			bad(f+".mac", "%s is also dhcp.host[%d]'s", h.MAC, j)
		} else {
			seen[h.MAC.String()] = i
		}
		if h.IP.IsValid() && !h.IP.Is4() {
			bad(f+".ip", "%q is not an IPv4 address", h.IP)
		}
		if _, err := template.New(f).Parse(h.BootFile); err != nil {
			bad(f+".boot_file", "template: %v", err)
		}
	}
}

// validateStaticIPs checks, in server mode, that every static address
// lies in a subnet and belongs to one host.
func (c *Config) validateStaticIPs(bad reporter) {
	owner := map[netip.Addr]int{}
	for i, h := range c.DHCP.Hosts {
		if !h.IP.Is4() {
			continue
		}
		f := fmt.Sprintf("dhcp.host[%d].ip", i)
		if j, dup := owner[h.IP]; dup {
			bad(f, "%s is also dhcp.host[%d]'s", h.IP, j)
			continue
		}
		owner[h.IP] = i
		in := false
		for _, sn := range c.DHCP.Subnets {
			in = in || sn.Prefix.Contains(h.IP)
		}
		if !in {
			bad(f, "%s is in no [[dhcp.subnet]] prefix", h.IP)
		}
	}
}
