package dhcp

import (
	"container/list"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Hold times.
const (
	// OfferHold is how long an OFFERed address stays reserved for its
	// client: long enough for the REQUEST (PXE retries at 4, 8, 16, 32 s,
	// docs/protocols.md §9.11), short enough that abandoned offers do not drain
	// a pool during a storm. Without it two DISCOVERs in a row get the same
	// address and one REQUEST is NAKed (dnsmasq: 21–31 % NAKs,
	// docs/lab-notes.md, "DHCP peers under a storm").
	OfferHold = time.Minute
	// DeclineHold quarantines an address a client DECLINEd (someone else
	// answers ARP for it); dnsmasq's DECLINE_BACKOFF is the same 10 min.
	DeclineHold = 10 * time.Minute
	// sweepBudget bounds the records one request drops (lapsed offers,
	// ended quarantines): they are dropped oldest first, a few per
	// request, so no request pays for a whole flood at once (pool.go).
	sweepBudget = 64
	// OfferGrace is how long an offer is safe from reclaim once the pool
	// is full: a real client REQUESTs within a second or two of the OFFER
	// (PXE ROMs collect offers for up to 4 s, docs/protocols.md §9.11), while
	// DISCOVERs from random MACs never REQUEST. Past it, a DISCOVER that
	// finds no free address takes the oldest unanswered offer's, so a
	// DISCOVER flood cannot hold the pool for the whole OfferHold.
	OfferGrace = 5 * time.Second
	// DefaultMaxPerMAC is how many clients (distinct client ids) one
	// hardware address may hold addresses for at once: VMs or a bridge
	// behind one MAC need a few, a client-id flood must not drain a pool.
	DefaultMaxPerMAC = 4
)

// Lease is one client's binding as Server.Leases reports it. Expired
// leases are kept as "previous binding" hints: the client gets the same
// address back if nobody else took it.
type Lease struct {
	ClientID []byte           // option 61; nil when the client is identified by MAC
	MAC      net.HardwareAddr // chaddr
	IP       netip.Addr
	Hostname string
	Start    time.Time // last ACK
	Expiry   time.Time // lease end; not after now = expired or released
	Static   bool      // address from Server.Hosts
	Arch     string    // option 93 of the last ACKed request, in decimal; "" = not sent
}

// binding is the table's record of one client (one per client key: one
// lease per client). A record that was only ever offered has a zero expiry.
type binding struct {
	key        string
	clientID   []byte
	mac        net.HardwareAddr
	ip         netip.Addr
	hostname   string
	start      time.Time
	expiry     time.Time
	offerUntil time.Time
	static     bool
	arch       string

	// The promise written ahead for an outstanding offer (promise.go):
	// the expiry the journal holds for ip on this client's behalf, the
	// change that wrote it, and its place in the pool's promise queue.
	promised    time.Time
	promiseSeq  uint64
	promiseEl   *list.Element
	promisePool *pool

	// Pool indexes (pool.go): the pool whose held heap b is in (nil if
	// none), its index there, and its element in the pool's offer queue.
	pool    *pool
	heapIdx int
	offerEl *list.Element
}

func (b *binding) active(now time.Time) bool { return b.expiry.After(now) }

// reserved: the address is taken, by a lease or by an outstanding offer.
func (b *binding) reserved(now time.Time) bool {
	return b.expiry.After(now) || b.offerUntil.After(now)
}

func (b *binding) lease() Lease {
	return Lease{
		ClientID: slices.Clone(b.clientID), MAC: slices.Clone(b.mac), IP: b.ip,
		Hostname: b.hostname, Start: b.start, Expiry: b.expiry, Static: b.static,
		Arch: b.arch,
	}
}

// leaseTable holds every binding. The Server's mutex guards it.
type leaseTable struct {
	byKey    map[string]*binding
	byMAC    map[string]*binding     // the newest client on a hardware address
	macs     map[string][]*binding   // every client on a hardware address (on a DUID: v6)
	v6       bool                    // a DHCPv6 table: owner is the DUID
	byIP     map[netip.Addr]*binding // current holder of an address (lease, offer or expired hint)
	declined map[netip.Addr]time.Time
	declineQ list.List // declinedEntry, oldest quarantine first
	pools    []*pool   // one per subnet, in Server.subnets order (pool.go)
	// probes counts addresses and records looked at to place or refuse
	// a client: the work per request, which must not grow with the pool
	// (a test reads it).
	probes uint64
	seq    uint64    // bumped by every change that must be on disk before the reply goes out
	now    time.Time // latest time Handle saw, for snapshots
	// dirty holds the addresses whose on-disk record (lease or none)
	// changed since the journal's last append, and quarantined the
	// DECLINEs since then (persist.go); nil without a lease file.
	dirty       map[netip.Addr]struct{}
	quarantined []declinedEntry
}

// declinedEntry is a quarantine in leaseTable.declineQ.
type declinedEntry struct {
	ip    netip.Addr
	until time.Time
}

func newLeaseTable() leaseTable {
	return leaseTable{
		byKey:    make(map[string]*binding),
		byMAC:    make(map[string]*binding),
		macs:     make(map[string][]*binding),
		byIP:     make(map[netip.Addr]*binding),
		declined: make(map[netip.Addr]time.Time),
	}
}

// clientKey identifies a client: option 61 if present, else chaddr
// (RFC 2131 §4.2). The prefix keeps the two spaces apart.
func clientKey(clientID []byte, mac net.HardwareAddr) string {
	if len(clientID) > 0 {
		return "i" + string(clientID)
	}
	return "h" + string(mac)
}

// lookup finds the client's record. A client id never seen before on a
// known MAC takes that MAC's record over: the PXE ROM, iPXE and the
// installed OS often identify one NIC differently (no 61, 61 = 01+MAC, a
// DUID), and without this one machine would hold three leases and walk
// through the pool at every reinstall. So a MAC holds at most one lease —
// unless that lease is live under another explicit client id: then it is
// another client behind the same MAC (a bridge that rewrites MACs, a VM
// host), which gets a record of its own rather than a shared address.
func (t *leaseTable) lookup(key string, clientID []byte, mac net.HardwareAddr, now time.Time) *binding {
	if b := t.byKey[key]; b != nil {
		if len(mac) > 0 && string(b.mac) != string(mac) {
			t.markHeld(b)
			if t.byMAC[string(b.mac)] == b {
				delete(t.byMAC, string(b.mac))
			}
			t.macDel(b)
			b.mac = slices.Clone(mac)
			t.macAdd(b)
			if o := t.byMAC[string(mac)]; o != nil && o != b {
				t.remove(o)
			}
			t.byMAC[string(mac)] = b
		}
		return b
	}
	if len(mac) == 0 {
		return nil
	}
	b := t.byMAC[string(mac)]
	if b == nil {
		return nil
	}
	if len(clientID) > 0 && len(b.clientID) > 0 && !isMACClientID(b.clientID, b.mac) && b.reserved(now) {
		return nil
	}
	t.markHeld(b)
	delete(t.byKey, b.key)
	b.key = key
	b.clientID = slices.Clone(clientID)
	t.byKey[key] = b
	return b
}

// isMACClientID reports whether a client id is just htype 1 + the MAC
// (what PXE ROMs and udhcpc send), i.e. names the NIC, not a client.
func isMACClientID(id []byte, mac net.HardwareAddr) bool {
	return len(id) == len(mac)+1 && id[0] == 1 && string(id[1:]) == string(mac)
}

func (t *leaseTable) create(key string, clientID []byte, mac net.HardwareAddr) *binding {
	b := &binding{key: key, clientID: slices.Clone(clientID), mac: slices.Clone(mac), heapIdx: -1}
	t.byKey[key] = b
	t.macAdd(b)
	if len(mac) > 0 {
		// A record already on this MAC is another client's (lookup would
		// have returned it otherwise): it keeps its lease, and byMAC
		// names the newest client. Dropping it would free an address its
		// holder still uses.
		t.byMAC[string(mac)] = b
	}
	return b
}

func (t *leaseTable) remove(b *binding) {
	if t.byKey[b.key] == b {
		delete(t.byKey, b.key)
	}
	if t.byMAC[string(b.mac)] == b {
		delete(t.byMAC, string(b.mac))
	}
	t.macDel(b)
	if b.ip.IsValid() && t.byIP[b.ip] == b {
		t.unpromise(b)
		t.markHeld(b)
		delete(t.byIP, b.ip)
		t.unhold(b.ip, b)
	}
}

// setIP moves b to ip. A previous holder of ip (its reservation lapsed,
// or a duplicate in a lease file) is dropped: its record names an
// address that is no longer its own.
func (t *leaseTable) setIP(b *binding, ip netip.Addr) {
	if b.ip == ip && t.byIP[ip] == b {
		t.touch(b)
		return
	}
	if b.ip.IsValid() && t.byIP[b.ip] == b {
		t.unpromise(b)
		t.markHeld(b)
		delete(t.byIP, b.ip)
		t.unhold(b.ip, b)
	}
	b.ip = ip
	if !ip.IsValid() {
		return
	}
	if o := t.byIP[ip]; !b.expiry.IsZero() || (o != nil && o != b && !o.expiry.IsZero()) {
		t.mark(ip)
	}
	if o := t.byIP[ip]; o != nil && o != b && !o.static {
		t.remove(o)
	} else if o != nil && o != b {
		t.unregister(o) // a static host's record stays: it is configured
	}
	t.byIP[ip] = b
	t.hold(b)
}

// mark notes that ip's record in the lease journal changes (persist.go).
func (t *leaseTable) mark(ip netip.Addr) {
	if t.dirty != nil {
		t.dirty[ip] = struct{}{}
	}
}

// markHeld marks b's address if b has a record there: it holds the
// address and was once bound (an expired lease is kept as a hint).
func (t *leaseTable) markHeld(b *binding) {
	if !b.expiry.IsZero() && b.ip.IsValid() && t.byIP[b.ip] == b {
		t.mark(b.ip)
	}
}

// holder returns the record holding ip, if it still reserves it.
func (t *leaseTable) holder(ip netip.Addr, now time.Time) *binding {
	if o := t.byIP[ip]; o != nil && o.reserved(now) {
		return o
	}
	return nil
}

// sweep drops records that were offered an address and never bound (so
// clients with random or spoofed MACs cannot grow the table without
// bound) and ends quarantines whose time is up: at most sweepBudget,
// oldest first, from the offer and quarantine queues. Records whose
// address went to another client were dropped then (setIP), declining
// ones when they declined.
func (t *leaseTable) sweep(now time.Time) {
	budget := sweepBudget
	for _, p := range t.pools {
		for e := p.offers.Front(); e != nil && budget > 0; e = p.offers.Front() {
			b := e.Value.(*binding)
			if b.offerUntil.After(now) {
				break
			}
			t.probes++
			budget--
			t.remove(b)
		}
	}
	for e := t.declineQ.Front(); e != nil && budget > 0; e = t.declineQ.Front() {
		d := e.Value.(declinedEntry)
		if d.until.After(now) {
			break
		}
		t.probes++
		budget--
		t.declineQ.Remove(e)
		if until, ok := t.declined[d.ip]; ok && !until.After(now) {
			t.unquarantine(d.ip)
		}
	}
}

// leases lists bound (or once bound) records, by address.
func (t *leaseTable) leases() []Lease {
	out := make([]Lease, 0, len(t.byIP))
	for ip, b := range t.byIP {
		if !b.expiry.IsZero() && b.ip == ip {
			out = append(out, b.lease())
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// staleOffer returns the address of the oldest offer in pool p that
// was never REQUESTed and is older than OfferGrace, with how many offers
// are outstanding there. Offers that lapsed are dropped on the way (what
// sweep would do), so each is looked at once: O(1) amortised.
func (t *leaseTable) staleOffer(p *pool, now time.Time) (ip netip.Addr, pending int) {
	for range sweepBudget {
		e := p.offers.Front()
		if e == nil {
			break
		}
		t.probes++
		b := e.Value.(*binding)
		if b.offerUntil.After(now) {
			if now.Sub(b.offerUntil.Add(-OfferHold)) >= OfferGrace {
				ip = b.ip
			}
			break
		}
		t.remove(b) // offered, never bound, lapsed
	}
	return ip, p.offers.Len()
}

// atLimit reports whether owner key already holds limit (def when
// limit <= 0) reservations besides self, and the limit applied.
func (t *leaseTable) atLimit(key string, self *binding, limit, def int, now time.Time) (int, bool) {
	if limit <= 0 {
		limit = def
	}
	return limit, t.heldByMAC(key, self, now) >= limit
}

// heldByMAC counts the clients other than self that reserve an address
// under owner key (leaseTable.owner: a hardware address, or a DUID).
func (t *leaseTable) heldByMAC(key string, self *binding, now time.Time) int {
	n := 0
	for _, b := range t.macs[key] {
		t.probes++
		if b != self && b.reserved(now) {
			n++
		}
	}
	return n
}

// IPv4 arithmetic for ranges.
func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrU32(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// free reports whether ip may be leased to the client self/mac in sub:
// inside the prefix and not its network or broadcast address; a static
// host's address only to that host, any other only from the range; never
// our own address or the router; not quarantined; not reserved by another
// client. self may be nil.
func (s *Server) free(sub *subnet, ip netip.Addr, self *binding, mac net.HardwareAddr, in Incoming, now time.Time) bool {
	if !ip.Is4() || !sub.Prefix.Contains(ip) || ip == sub.network || ip == sub.broadcast {
		return false
	}
	if h := s.staticIP[ip]; h != nil {
		return string(h.MAC) == string(mac)
	}
	if u := u32(ip); u < sub.start || u > sub.end {
		return false
	}
	if ip == in.IfAddr || ip == sub.Router || ip == s.TFTPServer {
		return false
	}
	if until, ok := s.leases.declined[ip]; ok && until.After(now) {
		return false
	}
	if o := s.leases.holder(ip, now); o != nil && o != self {
		return false
	}
	return true
}

// poolSkips bounds the available addresses fromPool may pass over (only
// the receiving interface's own address can be available and not free,
// and it is then excluded for good).
const poolSkips = 4

// fromPool picks a free address: the next one nobody holds after the
// pool's cursor (next-fit spreads fresh leases and keeps expired ones
// available to their old owners as long as possible), else the one whose
// previous holder's reservation ended longest ago. It looks at no more
// than poolSkips+1 addresses, whatever the pool's size (pool.go).
func (s *Server) fromPool(sub *subnet, self *binding, mac net.HardwareAddr, in Incoming, now time.Time) (netip.Addr, bool) {
	return s.leases.pick(s.leases.pools[sub.idx], in.IfAddr, func(ip netip.Addr) bool {
		return s.free(sub, ip, self, mac, in, now)
	}, now)
}

// pick is fromPool's search in pool p: free says whether an address may
// go to the client, own is the receiving interface's address.
func (t *leaseTable) pick(p *pool, own netip.Addr, free func(netip.Addr) bool, now time.Time) (netip.Addr, bool) {
	n := p.end - p.start + 1
	for range poolSkips {
		off, ok := p.avail.nextWrap(p.cursor)
		if !ok {
			break
		}
		t.probes++
		p.cursor = (off + 1) % n
		ip := p.addr(p.start + off)
		if free(ip) {
			return ip, true
		}
		if ip == own {
			// Our own address, inside the range: known only now that a
			// request came in on it. Never a candidate again.
			p.excluded[p.start+off] = true
			p.avail.clear(off)
		}
	}
	if len(p.held) > 0 {
		t.probes++
		if b := p.held[0]; !b.reserved(now) && free(b.ip) {
			return b.ip, true
		}
	}
	return netip.Addr{}, false
}
