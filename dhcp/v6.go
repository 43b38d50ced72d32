package dhcp

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/counters"
	"github.com/mtftpd/mtftpd/tftp"
)

// DHCPv6 (RFC 8415) for network boot: stateful addresses (IA_NA) from one
// range and the boot file URL (option 59, RFC 5970) chosen by the same
// boot rules as DHCPv4 (docs/protocols.md §14). Server6 shares the v4
// server's lease table, pool indexes and journal (a DHCPv6 table keys a
// binding by IAID + DUID and limits bindings per DUID); it answers only
// clients on the link (link-local sources), never relays, and has no
// ProxyDHCPv6.

// DHCPv6 ports (RFC 8415 §7.2).
const (
	PortServer6 = 547
	PortClient6 = 546
)

// allDHCP6 is All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
var allDHCP6 = netip.MustParseAddr("ff02::1:2")

const (
	// iaidLen is an IAID's length (RFC 8415 §21.4): a DHCPv6 binding's
	// client id is IAID + DUID.
	iaidLen = 4
	// maxIAs bounds the IA_NAs of one message that get an address:
	// firmware and iPXE send one, an OS one per interface it configures.
	maxIAs = 4
	// maxDUID is a DUID's largest length (RFC 8415 §11.1: 128 octets
	// plus the 2-octet type).
	maxDUID = 130
	// DefaultMaxPerDUID is how many IAs one DUID may hold addresses for
	// at once (Server6.MaxPerDUID = 0).
	DefaultMaxPerDUID = 4
	// DefaultRate6 is the requests per second one source address may
	// send (with twice that as a burst): a booting client sends a
	// handful in its first seconds (Solicit, Request, iPXE's own two).
	DefaultRate6 = 10
	// replyFactor bounds a reply to this many times its request's size:
	// a forged link-local source can aim no more than that at a
	// neighbour (docs/security.md). A Solicit of 60 bytes gets a
	// 200-byte Advertise with a boot URL.
	replyFactor = 8
	// maxRange6 caps the DHCPv6 range (RangeEnd-RangeStart+1): each
	// address can hold a binding (about 410 heap bytes, docs/security.md),
	// and a Solicit flood with random DUIDs fills the pool with
	// Advertises before the oldest are reclaimed: 2^16 addresses are
	// ~27 MB at most, where DHCPv4's 2^24 would be ~6.9 GB. A netboot
	// link needs far fewer.
	maxRange6 = 1 << 16
	// rapidRate and rapidBurst bound the IAs per second one interface
	// commits by Rapid Commit to a binding it has not Advertised (no
	// round trip proves the sender): a room of machines powered on
	// together fits the burst; past it, a Solicit gets an ordinary
	// Advertise (RFC 8415 §18.3.1 lets a server ignore Rapid Commit),
	// whose Request then commits.
	rapidRate  = 20
	rapidBurst = 64
	// replyFloor is the size every reply may have whatever the request:
	// a minimal Solicit (ClientID + an empty IA_NA: 44 bytes) still gets
	// its Advertise.
	replyFloor = 256
)

// Server6 is a DHCPv6 server for network boot. Configure it through its
// fields before the first Serve or Handle; a zero field means the
// documented default. Handle, Leases and Shutdown are safe to call
// concurrently.
type Server6 struct {
	// Interfaces lists the links to serve (at least one): the socket
	// joins ff02::1:2 on each.
	Interfaces []string
	// Prefix is the link's on-link prefix (a /64): Confirm says
	// NotOnLink for addresses outside it, and the router advertisement
	// (package ra) announces it.
	Prefix netip.Prefix
	// RangeStart..RangeEnd is the pool, inclusive, inside Prefix, with
	// the same upper 96 bits and at most maxRange6 (2^16) addresses.
	RangeStart, RangeEnd netip.Addr
	// LeaseTime is the valid and preferred lifetime; T1 and T2 are
	// half and 4/5 of it (RFC 8415 §21.4). 0 = DefaultLeaseTime.
	LeaseTime time.Duration
	DNS       []netip.Addr // option 23, when asked for
	// Rules decide the boot file, as for DHCPv4; nil = DefaultBootRules().
	Rules []BootRule
	// Hosts are known machines by MAC (DHCPv4's table; IP is not used):
	// a client whose DUID or EUI-64 link-local address names the MAC
	// gets the host's BootFile (not iPXE, as DHCPv4) and its Vars and
	// Hostname in the templates.
	Hosts []Host
	// DefaultArch is the architecture assumed for a netboot client
	// (one that asks for option 59) that names none in option 61 nor
	// in its vendor class (OVMF and iPXE builds that omit it,
	// docs/protocols.md §14.3); nil = none: such a client gets no boot
	// URL.
	DefaultArch *uint16
	// TFTPServer is the host of tftp:// boot URLs; zero = the receiving
	// interface's address inside Prefix.
	TFTPServer netip.Addr
	// HTTPBase is {{.HTTP}}; "" = http://[the receiving interface's
	// address]:HTTPPort.
	HTTPBase string
	HTTPPort int
	// RapidCommit answers a Solicit with Rapid Commit (option 14) by a
	// Reply that commits the lease at once (RFC 8415 §18.3.1), for new
	// IAs at most rapidRate a second per interface (burst rapidBurst).
	RapidCommit bool
	// MaxPerDUID caps the IAs one DUID holds addresses for; 0 =
	// DefaultMaxPerDUID.
	MaxPerDUID int
	// Rate is the requests per second per source address (burst
	// twice that); 0 = DefaultRate6, -1 = no limit.
	Rate int
	// LeaseFile persists leases in a lease journal (docs/dhcp-leases.md);
	// "" keeps them in memory only.
	LeaseFile string
	// DUID is the server's identifier (option 2); nil = DUID-LL of the
	// first interface, or DUID-EN from the host name when it has no
	// hardware address.
	DUID []byte
	// Addr is the listen address, default [::]:547.
	Addr netip.AddrPort

	Log      zerolog.Logger
	Counters Counters6

	setupOnce sync.Once
	setupErr  error
	rules     ruleSet // guarded by mu once set up
	hosts     map[string]*host
	duid      []byte
	first     uint32 // pool bounds (low 32 bits)
	last      uint32
	lease     time.Duration
	srcLimit  *tftp.SourceLimiter
	rapid     map[int]*tokenBucket // by IfIndex (mu): Rapid Commits of new IAs

	leaseDB

	lifecycle
}

// Counters6 count the fate of every DHCPv6 packet.
type Counters6 struct {
	Solicit     atomic.Uint64 // Solicits received
	Request     atomic.Uint64 // Requests received
	Renew       atomic.Uint64 // Renews and Rebinds received
	Release     atomic.Uint64 // Releases and Declines received
	Confirm     atomic.Uint64 // Confirms received
	InfoRequest atomic.Uint64 // Information-requests received

	Advertise atomic.Uint64 // Advertises sent
	Reply     atomic.Uint64 // Replies sent
	BootURL   atomic.Uint64 // answers that carried a boot file URL (option 59)

	Ignored        atomic.Uint64 // valid messages deliberately left unanswered (not for us, relayed, not from the link)
	NotNetboot     atomic.Uint64 // Solicits, Rebinds, Confirms and Information-requests of clients that are no netboot clients: unanswered
	BadPacket      atomic.Uint64 // unparsable or nonsensical messages
	RateLimited    atomic.Uint64 // messages over their source's rate: unanswered
	NoArch         atomic.Uint64 // netboot clients no boot rule matches: unanswered
	NoAddrsAvail   atomic.Uint64 // IAs answered NoAddrsAvail (pool full, DUID over MaxPerDUID, not Advertised)
	NotAdvertised  atomic.Uint64 // IAs Requested that this server never Advertised to that DUID and IAID: NoAddrsAvail
	RapidLimited   atomic.Uint64 // Solicits with Rapid Commit over their interface's rate of new IAs: Advertised instead
	DUIDLimited    atomic.Uint64 // IAs refused: MaxPerDUID IAs already hold addresses under the DUID
	OffersReclaim  atomic.Uint64 // Advertised addresses nobody Requested within OfferGrace, taken back for a Solicit that found the pool full
	Oversize       atomic.Uint64 // answers over replyFactor × their request even without optional options: unanswered
	LeaseWrites    atomic.Uint64 // lease journal appends and rewrites
	LeaseWriteErrs atomic.Uint64 // failed commits: the Replies waiting on them were not sent
	SendErrors     atomic.Uint64 // replies the kernel refused
	SendDropped    atomic.Uint64 // replies dropped, not waited for: send buffer full (answers to unresolved neighbours fill it)
	ReadErrors     atomic.Uint64 // socket read errors other than shutdown
}

// Snapshot returns every counter (for /metrics).
func (c *Counters6) Snapshot() []counters.Value { return counters.Snapshot(c) }

// ErrServer6Closed is returned by Serve after Shutdown.
var ErrServer6Closed = errors.New("dhcp6: server closed")

func (s *Server6) setup() error {
	s.setupOnce.Do(func() { s.setupErr = s.validate() })
	return s.setupErr
}

// validate checks what the server's structures rely on (internal/config
// checks every key, naming it) and opens the lease journal.
func (s *Server6) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	p, first, last := s.Prefix.Masked(), s.RangeStart, s.RangeEnd
	a, b := first.As16(), last.As16()
	switch {
	case !p.Addr().Is6() || p.Addr().Is4In6() || !first.Is6() || !last.Is6() || !p.Contains(first) || !p.Contains(last) || last.Less(first):
		bad("Prefix/RangeStart/RangeEnd: %v, %v–%v is not an IPv6 prefix with a range inside it, in order", s.Prefix, first, last)
	case [12]byte(a[:12]) != [12]byte(b[:12]) || binary.BigEndian.Uint32(b[12:])-binary.BigEndian.Uint32(a[12:]) >= maxRange6:
		bad("RangeStart/RangeEnd: %v–%v must share the upper 96 bits and hold at most %d addresses", first, last, maxRange6)
	default:
		s.first, s.last = binary.BigEndian.Uint32(a[12:]), binary.BigEndian.Uint32(b[12:])
	}
	s.Prefix = p
	if len(s.Interfaces) == 0 {
		bad("Interfaces: DHCPv6 needs at least one interface (its socket joins ff02::1:2 on each)")
	}
	rs, err := compileOrDefault(s.Rules)
	if err != nil {
		errs = append(errs, err)
	}
	s.rules = rs
	s.hosts = make(map[string]*host)
	for i, h := range s.Hosts {
		t, err := compileFile("host "+h.MAC.String(), h.BootFile)
		if err != nil {
			bad("Hosts[%d].BootFile: %w", i, err)
		}
		s.hosts[string(h.MAC)] = &host{Host: h, tmpl: t}
	}
	if len(s.DUID) > maxDUID || (s.DUID != nil && len(s.DUID) < 3) {
		bad("DUID: %d bytes (3..%d)", len(s.DUID), maxDUID)
	}
	s.duid = s.DUID
	if s.duid == nil {
		s.duid = defaultDUID(s.Interfaces)
	}
	s.lease = s.LeaseTime
	if s.lease <= 0 {
		s.lease = DefaultLeaseTime
	}
	rate := s.Rate
	switch {
	case rate == 0:
		rate = DefaultRate6
	case rate < 0:
		rate = 0
	}
	s.srcLimit = tftp.NewSourceLimiter(rate, 0)
	if len(errs) > 0 {
		return fmt.Errorf("dhcp6: invalid configuration: %w", errors.Join(errs...))
	}
	s.leaseDB.path, s.leaseDB.log, s.leaseDB.newTable = s.LeaseFile, &s.Log, s.newTable
	s.writes, s.writeErrors = &s.Counters.LeaseWrites, &s.Counters.LeaseWriteErrs
	s.leases = s.newTable()
	if s.LeaseFile != "" {
		return s.openStore(time.Now())
	}
	return nil
}

// newTable is an empty DHCPv6 lease table with the one pool.
func (s *Server6) newTable() leaseTable {
	t := newLeaseTable()
	t.v6 = true
	a := s.RangeStart.As16()
	p := newPool(s.first, s.last, map[uint32]bool{})
	p.v6, p.hi = true, [12]byte(a[:12])
	if s.TFTPServer.IsValid() && p.inRange(s.TFTPServer) {
		u, _ := p.low(s.TFTPServer)
		p.excluded[u] = true
		p.setAvail(s.TFTPServer, false)
	}
	t.pools = []*pool{p}
	return t
}

// enterpriseDoc is the enterprise number reserved for documentation
// (RFC 5612), in the DUID-EN a server without a hardware address uses.
const enterpriseDoc = 32473

// defaultDUID is DUID-LL (type 3, hardware type 1) of the first named
// interface with an Ethernet address, else DUID-EN (type 2) of
// enterpriseDoc and 8 bytes of SHA-256 of the host name: stable across
// restarts, so Renews after one still name this server.
func defaultDUID(ifaces []string) []byte {
	for _, name := range ifaces {
		if ifc, err := net.InterfaceByName(name); err == nil && len(ifc.HardwareAddr) == 6 {
			return append([]byte{0, 3, 0, 1}, ifc.HardwareAddr...)
		}
	}
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte("mtftpd dhcp6 " + host))
	d := binary.BigEndian.AppendUint16(nil, 2)
	d = binary.BigEndian.AppendUint32(d, enterpriseDoc)
	return append(d, sum[:8]...)
}

// Leases returns every DHCPv6 binding (expired ones included), by
// address. Lease.ClientID is the IAID followed by the DUID.
func (s *Server6) Leases() []Lease {
	if s.setup() != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases.leases()
}

// ServerDUID is the server's DUID (option 2).
func (s *Server6) ServerDUID() []byte {
	if s.setup() != nil {
		return nil
	}
	return s.duid
}

// SetBootRules replaces the boot rules while the server runs (nil: the
// built-in ones). A set that does not compile is refused.
func (s *Server6) SetBootRules(rules []BootRule) error {
	if err := s.setup(); err != nil {
		return err
	}
	return s.swapRules(&s.rules, rules)
}

// Shutdown stops Serve, waits for it until ctx is done, and makes every
// lease change durable. It may be called without Serve and more than once.
func (s *Server6) Shutdown(ctx context.Context) error {
	if err := s.halt(ctx); err != nil {
		return err
	}
	if s.setup() != nil {
		return nil
	}
	return s.closeStore()
}

// bootURL turns a rule's file into option 59's URL: an absolute URL as
// it is, a TFTP name as tftp://[host]/name (RFC 5970 §3.1).
func bootURL(file string, host netip.Addr) string {
	if strings.Contains(file, "://") {
		return file
	}
	return "tftp://[" + host.WithZone("").String() + "]/" + strings.TrimLeft(file, "/")
}
