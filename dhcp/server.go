package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/rs/zerolog"
)

// Mode selects full DHCP or ProxyDHCP.
type Mode string

// Modes.
const (
	// ModeServer hands out addresses and boot information (the zero
	// Mode means this).
	ModeServer Mode = "server"
	// ModeProxy answers only netboot clients, with boot information and
	// no address, beside another DHCP server (docs/protocols.md §9.5).
	ModeProxy Mode = "proxy"
)

// Ports. Incoming.Port names the socket's role with these values, whatever
// port the socket really has (tests listen on high ports).
const (
	PortServer = 67   // DHCP server (and relay agent) port
	PortClient = 68   // DHCP client port
	PortProxy  = 4011 // PXE ProxyDHCP / boot server port
)

// DefaultLeaseTime is a Subnet's lease time when LeaseTime is 0.
const DefaultLeaseTime = time.Hour

// maxRangeSize caps a Subnet's range: the pool's bitset (pool.go) takes
// 2 MiB at this size, built once at start.
const maxRangeSize = 1 << 24

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("dhcp: server closed")

// Subnet is one network the server hands addresses out in (server mode).
type Subnet struct {
	Prefix               netip.Prefix
	RangeStart, RangeEnd netip.Addr // the dynamic pool, inclusive, inside Prefix
	Router               netip.Addr // option 3; zero = none
	DNS                  []netip.Addr
	Domain               string
	LeaseTime            time.Duration // 0 = DefaultLeaseTime
}

// Host is a known machine, by MAC: a static address (IP may be zero: the
// host then takes a pool address), a host name (option 12) and a boot file
// that replaces the boot rules' choice. Static hosts always get their
// address.
type Host struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
	// BootFile replaces the rules' file for firmware clients (it is a
	// template like BootRule.File). iPXE clients still follow the rules,
	// so a per-host iPXE binary cannot loop (docs/protocols.md §9.9); HTTP Boot
	// clients use it only if it is an http(s) URL.
	BootFile string
	Vars     map[string]string // template variables ({{.Vars.name}}), for the rules and the mirror
}

// Server is a DHCP / ProxyDHCP server. Configure it through its fields
// before the first Serve or Handle; a zero field means the documented
// default. Handle, Leases and Shutdown are safe to call concurrently.
type Server struct {
	Mode Mode
	// Interfaces binds one socket per interface (SO_BINDTODEVICE); empty
	// means one socket on Addr for all interfaces.
	Interfaces []string
	// Subnets (server mode, at least one) are chosen by giaddr for
	// relayed requests, else by the receiving interface's address.
	Subnets []Subnet
	// Relays are the DHCP relay agents whose requests are answered: a
	// request with giaddr set is answered only when giaddr and the
	// datagram's source address both lie in these prefixes (a relay
	// sends from its giaddr, or from another of its addresses, listed
	// too). Empty: relayed requests are not answered. Without it any
	// host on the segment could claim a giaddr in a remote subnet and
	// drain that pool (docs/security.md).
	Relays []netip.Prefix
	// Hosts are static leases and per-host boot files, by MAC.
	Hosts []Host
	// Rules decide the boot file; nil means DefaultBootRules().
	Rules []BootRule
	// TFTPServer is siaddr (next-server); zero = the receiving
	// interface's address.
	TFTPServer netip.Addr
	// HTTPBase is the mirror base URL for {{.HTTP}}; "" = http://<the
	// receiving interface's address>.
	HTTPBase string
	// HTTPPort is the mirror's port for the default HTTPBase (0 or 80:
	// none in the URL).
	HTTPPort int
	// PXEMTFTP announces PXE MTFTP (option 43.1–43.5) to BIOS PXE ROMs;
	// nil never does (mtftp.go).
	PXEMTFTP *PXEMTFTP
	// MaxPerMAC caps the clients (distinct client ids) that hold
	// addresses under one hardware address; 0 = DefaultMaxPerMAC.
	MaxPerMAC int
	// LeaseFile persists leases in a journal (docs/dhcp-leases.md; a
	// JSON lease file of old is migrated); "" keeps them in memory only.
	LeaseFile string
	// Addr is the listen address, default 0.0.0.0:67. Proxy mode also
	// listens on Addr's host at ProxyPort (default 4011).
	Addr      netip.AddrPort
	ProxyPort int
	// Sockets, if set, are used by Serve instead of opening Addr and
	// ProxyPort itself (Listen: bind, drop privileges, then Serve).
	Sockets *Sockets

	// Log receives lifecycle events and rate-limited anomalies (pool
	// exhausted, unknown architecture, DECLINE, lease file trouble).
	Log zerolog.Logger

	// Counters count every packet's fate; read them at any time.
	Counters Counters

	setupOnce sync.Once
	setupErr  error

	// Configuration normalised by setup; read-only afterwards.
	mode      Mode
	subnets   []*subnet
	hostByMAC map[string]*host
	staticIP  map[netip.Addr]*host
	rules     ruleSet
	httpBase  string
	addr      string
	proxyPort int
	mtftp     *mtftpConfig // nil: no PXE MTFTP announcements

	leaseDB // the lease table, its lock (mu) and journal (store.go)

	lifecycle
	socks  []*sock // guarded by life
	ifaces ifaceCache
}

// subnet is a validated Subnet with its derived values.
type subnet struct {
	Subnet
	network, broadcast netip.Addr
	mask               []byte
	start, end         uint32 // range
	idx                int    // index in Server.subnets and leaseTable.pools
	lease              time.Duration
}

type host struct {
	Host
	tmpl *template.Template
}

// setup normalises the configuration once and loads the lease file.
// Serve and the first Handle call it.
func (s *Server) setup() error {
	s.setupOnce.Do(func() { s.setupErr = s.validate() })
	return s.setupErr
}

// validate fills the normalised copies of the fields. Every key of the
// config file is checked, naming it, by internal/config's Validate;
// here only what the server's own structures rely on is guarded, for a
// Server built by hand (tests, library use): a known mode, IPv4 subnets
// whose range fits the pool (its arithmetic and bitset, pool.go), one
// host per MAC, static addresses in IPv4, and templates that compile.
// What a bad value elsewhere costs is a wrong answer, never a crash.
func (s *Server) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	s.mode = s.Mode
	if s.mode == "" {
		s.mode = ModeServer
	}
	if s.mode != ModeServer && s.mode != ModeProxy {
		bad("Mode: %q is neither %q nor %q", s.Mode, ModeServer, ModeProxy)
	}
	if s.mode == ModeServer && len(s.Subnets) == 0 {
		bad("Subnets: server mode needs at least one")
	}
	for i, sn := range s.Subnets {
		sub, err := newSubnet(sn)
		if err != nil {
			bad("Subnets[%d]: %w", i, err)
			continue
		}
		sub.idx = len(s.subnets)
		s.subnets = append(s.subnets, sub)
	}
	s.indexHosts(bad)
	rs, err := compileOrDefault(s.Rules)
	if err != nil {
		errs = append(errs, err)
	}
	s.rules = rs
	s.httpBase = strings.TrimRight(s.HTTPBase, "/")
	s.addr = listenAddr(s.Addr)
	s.proxyPort = s.ProxyPort
	if s.proxyPort == 0 {
		s.proxyPort = PortProxy
	}
	s.validateMTFTP(bad)
	if len(errs) > 0 {
		return fmt.Errorf("dhcp: invalid configuration: %w", errors.Join(errs...))
	}

	s.leaseDB.path, s.leaseDB.log, s.leaseDB.newTable = s.LeaseFile, &s.Log, s.newTable
	s.writes, s.writeErrors = &s.Counters.LeaseWrites, &s.Counters.LeaseWriteErrors
	s.leases = s.newTable()
	if s.LeaseFile != "" {
		if err := s.openStore(time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// indexHosts indexes Hosts by MAC and static address, with their boot
// file templates.
func (s *Server) indexHosts(bad func(format string, a ...any)) {
	s.hostByMAC = make(map[string]*host)
	s.staticIP = make(map[netip.Addr]*host)
	for i, h := range s.Hosts {
		t, err := compileFile("host "+h.MAC.String(), h.BootFile)
		switch {
		case len(h.MAC) == 0 || s.hostByMAC[string(h.MAC)] != nil:
			bad("Hosts[%d]: MAC %q is empty or listed twice", i, h.MAC.String())
		case h.IP.IsValid() && !h.IP.Is4():
			bad("Hosts[%d].IP: %v is not IPv4", i, h.IP)
		case err != nil:
			bad("Hosts[%d].BootFile: %w", i, err)
		default:
			hh := &host{Host: h, tmpl: t}
			s.hostByMAC[string(h.MAC)] = hh
			if h.IP.IsValid() {
				s.staticIP[h.IP] = hh
			}
		}
	}
}

// listenAddr is Addr as the sockets take it: ":67" when unset.
func listenAddr(a netip.AddrPort) string {
	if !a.IsValid() {
		return ":" + strconv.Itoa(PortServer)
	}
	return a.String()
}

// newTable is an empty lease table with one pool per subnet. A pool never
// hands out its subnet's network and broadcast address, the router, the
// next-server or a static host's address.
func (s *Server) newTable() leaseTable {
	t := newLeaseTable()
	for _, sub := range s.subnets {
		ex := map[uint32]bool{}
		for _, a := range []netip.Addr{sub.network, sub.broadcast, sub.Router, s.TFTPServer} {
			if a.IsValid() && a.Is4() {
				ex[u32(a)] = true
			}
		}
		for ip := range s.staticIP {
			if sub.Prefix.Contains(ip) {
				ex[u32(ip)] = true
			}
		}
		t.pools = append(t.pools, newPool(sub.start, sub.end, ex))
	}
	return t
}

// newSubnet derives a subnet's pool bounds, mask and lease time. Its
// prefix and range must be IPv4 and the range inside the prefix, in
// order, at most maxRangeSize long: the pool's arithmetic needs it.
func newSubnet(sn Subnet) (*subnet, error) {
	p, first, last := sn.Prefix.Masked(), sn.RangeStart, sn.RangeEnd
	if !p.Addr().Is4() || !first.Is4() || !last.Is4() || !p.Contains(first) || !p.Contains(last) || last.Less(first) ||
		u32(last)-u32(first) >= maxRangeSize {
		return nil, fmt.Errorf("Prefix/RangeStart/RangeEnd: %v, %v–%v is not an IPv4 prefix with a range of at most %d addresses inside it, in order",
			sn.Prefix, first, last, maxRangeSize)
	}
	sn.Prefix = p
	sub := &subnet{Subnet: sn, lease: sn.LeaseTime, start: u32(first), end: u32(last)}
	if sub.lease == 0 {
		sub.lease = DefaultLeaseTime
	}
	bits := p.Bits()
	base := u32(p.Addr())
	hostMask := uint32(1)<<(32-bits) - 1
	if bits == 0 {
		hostMask = ^uint32(0)
	}
	sub.mask = net.CIDRMask(bits, 32)
	if bits <= 30 { // /31 and /32 have no network or broadcast address (RFC 3021)
		sub.network, sub.broadcast = addrU32(base), addrU32(base|hostMask)
	}
	return sub, nil
}

// subnetOf returns the subnet whose prefix holds ip.
func (s *Server) subnetOf(ip netip.Addr) *subnet {
	for _, sub := range s.subnets {
		if sub.Prefix.Contains(ip) {
			return sub
		}
	}
	return nil
}

func (db *leaseDB) leaseWritten(err error) {
	if err == nil {
		db.writes.Add(1)
		return
	}
	db.writeErrors.Add(1)
	db.mu.Lock()
	ok, n := db.limit.allow("lease-write", db.leases.now)
	db.mu.Unlock()
	if ok {
		db.log.Error().Err(err).Str("file", db.path).Int("suppressed", n).
			Msg("dhcp: cannot write lease file: ACKs withheld until it works")
	}
}

// durable waits until change seq is on disk (no-op without LeaseFile).
func (db *leaseDB) durable(seq uint64) error {
	if seq == 0 || db.store == nil {
		return nil
	}
	return db.store.wait(seq)
}

// Leases returns every binding (expired ones included, as hints), by
// address.
func (s *Server) Leases() []Lease {
	if s.setup() != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases.leases()
}

// LeaseOf returns the lease of the address ip active at now: who the machine
// asking for a file from ip is (the mirror's per-host templates use it).
func (s *Server) LeaseOf(ip netip.Addr, now time.Time) (Lease, bool) {
	if s.setup() != nil {
		return Lease{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.leases.byIP[ip.Unmap()]
	if b == nil || b.ip != ip.Unmap() || !b.active(now) {
		return Lease{}, false
	}
	return b.lease(), true
}

// Shutdown stops Serve (which then returns ErrServerClosed), waits for it
// until ctx is done, and writes the lease file if anything changed since
// the last write. It may be called without Serve (after Handle) and more
// than once.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.halt(ctx); err != nil {
		return err
	}
	if s.setup() != nil {
		return nil
	}
	return s.closeStore()
}

// limiter rate-limits log lines by kind: one per limitEvery, with the
// number suppressed in between. The Server's mutex guards it.
type limiter struct {
	last       map[string]time.Time
	suppressed map[string]int
}

// limitEvery is the quiet time between two log lines of one kind.
const limitEvery = 10 * time.Second

func (l *limiter) allow(kind string, now time.Time) (bool, int) {
	if l.last == nil {
		l.last = make(map[string]time.Time)
		l.suppressed = make(map[string]int)
	}
	if t, ok := l.last[kind]; ok && now.Sub(t) < limitEvery && !t.After(now) {
		l.suppressed[kind]++
		return false, 0
	}
	n := l.suppressed[kind]
	l.last[kind] = now
	l.suppressed[kind] = 0
	return true, n
}

// SetBootRules replaces the boot rules while the server runs (nil: the
// built-in ones); requests handled after it returns use them. A set that
// does not compile is refused and the running one kept.
func (s *Server) SetBootRules(rules []BootRule) error {
	if err := s.setup(); err != nil {
		return err
	}
	return s.swapRules(&s.rules, rules)
}

// SetMaxPerMAC changes MaxPerMAC while the server runs.
func (s *Server) SetMaxPerMAC(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.MaxPerMAC = n
}
