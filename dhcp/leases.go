package dhcp

import (
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
	// protocols.md §9.11), short enough that abandoned offers do not drain
	// a pool during a storm. Without it two DISCOVERs in a row get the same
	// address and one REQUEST is NAKed (dnsmasq, lab-notes: 21–31 % NAKs).
	OfferHold = time.Minute
	// DeclineHold quarantines an address a client DECLINEd (someone else
	// answers ARP for it); dnsmasq's DECLINE_BACKOFF is the same 10 min.
	DeclineHold = 10 * time.Minute
	// sweepEvery bounds how often abandoned offers are swept.
	sweepEvery = time.Minute
	// OfferGrace is how long an offer is safe from reclaim once the pool
	// is full: a real client REQUESTs within a second or two of the OFFER
	// (PXE ROMs collect offers for up to 4 s, protocols.md §9.11), while
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
	byMAC    map[string]*binding
	byIP     map[netip.Addr]*binding // current holder of an address (lease, offer or expired hint)
	declined map[netip.Addr]time.Time
	seq      uint64    // bumped by every change that must be on disk before the reply goes out
	now      time.Time // latest time Handle saw, for snapshots
	swept    time.Time
}

func newLeaseTable() leaseTable {
	return leaseTable{
		byKey:    make(map[string]*binding),
		byMAC:    make(map[string]*binding),
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
			if t.byMAC[string(b.mac)] == b {
				delete(t.byMAC, string(b.mac))
			}
			b.mac = slices.Clone(mac)
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
	b := &binding{key: key, clientID: slices.Clone(clientID), mac: slices.Clone(mac)}
	t.byKey[key] = b
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
	if b.ip.IsValid() && t.byIP[b.ip] == b {
		delete(t.byIP, b.ip)
	}
}

// setIP moves b to ip. A previous holder whose reservation has lapsed
// keeps its (now stale) hint; one that was only ever offered is dropped.
func (t *leaseTable) setIP(b *binding, ip netip.Addr) {
	if b.ip == ip && t.byIP[ip] == b {
		return
	}
	if b.ip.IsValid() && t.byIP[b.ip] == b {
		delete(t.byIP, b.ip)
	}
	b.ip = ip
	if !ip.IsValid() {
		return
	}
	if o := t.byIP[ip]; o != nil && o != b && o.expiry.IsZero() {
		t.remove(o)
	}
	t.byIP[ip] = b
}

// holder returns the record holding ip, if it still reserves it.
func (t *leaseTable) holder(ip netip.Addr, now time.Time) *binding {
	if o := t.byIP[ip]; o != nil && o.reserved(now) {
		return o
	}
	return nil
}

// sweep drops records that were offered an address and never bound, and
// lapsed ones whose address now belongs to another client (so clients
// with random or spoofed MACs cannot grow the table without bound).
func (t *leaseTable) sweep(now time.Time) {
	if now.Sub(t.swept) < sweepEvery && !t.swept.After(now) {
		return
	}
	t.swept = now
	for _, b := range t.byKey {
		switch {
		case b.static:
		case b.expiry.IsZero() && !b.offerUntil.After(now):
			t.remove(b) // offered, never bound
		case !b.reserved(now) && (!b.ip.IsValid() || t.byIP[b.ip] != b):
			t.remove(b) // lapsed, and its address went to someone else
		}
	}
	for ip, until := range t.declined {
		if !until.After(now) {
			delete(t.declined, ip)
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

// staleOffer returns the address of the oldest offer in sub that was
// never REQUESTed and is older than OfferGrace, with how many offers in
// sub are outstanding.
func (t *leaseTable) staleOffer(sub *subnet, now time.Time) (ip netip.Addr, pending int) {
	var oldest time.Time
	for a, b := range t.byIP {
		if b.ip != a || !b.expiry.IsZero() || !b.offerUntil.After(now) || b.static || !sub.Prefix.Contains(a) {
			continue
		}
		pending++
		offered := b.offerUntil.Add(-OfferHold)
		if now.Sub(offered) >= OfferGrace && (!ip.IsValid() || offered.Before(oldest)) {
			ip, oldest = a, offered
		}
	}
	return ip, pending
}

// heldByMAC counts the clients other than self that reserve an address
// under hardware address mac.
func (t *leaseTable) heldByMAC(mac net.HardwareAddr, self *binding, now time.Time) int {
	n := 0
	for _, b := range t.byKey {
		if b != self && string(b.mac) == string(mac) && b.reserved(now) {
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

// fromPool picks a free address: the next never-used one after the
// subnet's cursor (next-fit spreads fresh leases and keeps expired ones
// available to their old owners as long as possible), else the one whose
// previous owner's lease ended longest ago.
func (s *Server) fromPool(sub *subnet, self *binding, mac net.HardwareAddr, in Incoming, now time.Time) (netip.Addr, bool) {
	n := sub.end - sub.start + 1
	var best netip.Addr
	var bestEnd time.Time
	for k := range n {
		off := (sub.cursor + k) % n
		ip := addrU32(sub.start + off)
		if !s.free(sub, ip, self, mac, in, now) {
			continue
		}
		o := s.leases.byIP[ip]
		if o == nil || o == self {
			sub.cursor = (off + 1) % n
			return ip, true
		}
		if !best.IsValid() || o.expiry.Before(bestEnd) {
			best, bestEnd = ip, o.expiry
		}
	}
	return best, best.IsValid()
}
