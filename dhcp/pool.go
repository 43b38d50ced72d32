package dhcp

import (
	"container/heap"
	"container/list"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"time"
)

// The address pool's indexes. A DISCOVER from a new client used to scan
// the whole range (free() on each address), then every binding (for the
// oldest offer to reclaim) and every client (for the per-MAC limit),
// all under the server's lock: 13.5 ms per DISCOVER with a /18 filled by
// a starvation run, so about 75 packets/s saturated DHCP (issue 13,
// finding 10). With these, allocation looks at a handful of addresses
// whatever the pool's size:
//
//   - avail, a bitset of the addresses nobody holds (never leased, or
//     freed), searched next-fit from a cursor in O(log64 n) word reads;
//   - held, a heap of the bindings that hold a pool address, by the end
//     of their reservation (lease or offer): its top is the address
//     whose last holder's lease ended longest ago;
//   - offers, the bindings only ever offered an address, oldest first:
//     the front is the offer to reclaim when the pool is full;
//   - leaseTable.macs, the bindings by hardware address (by DUID in a
//     DHCPv6 table), for the per-MAC (per-DUID) limit.

// pool is one subnet's range and its indexes. The Server's mutex guards
// it, with the lease table it belongs to. An IPv4 pool's addresses are
// start..end as numbers; an IPv6 pool's (DHCPv6, v6pool.go) share the
// upper 96 bits hi and their low 32 bits run start..end, so one pool
// stays a bitset of at most maxRangeSize addresses in both families.
type pool struct {
	v6         bool
	hi         [12]byte
	start, end uint32
	excluded   map[uint32]bool // never handed out: network, broadcast, router, next-server, static hosts
	avail      *bitset         // offsets into the range that nobody holds
	cursor     uint32          // next-fit offset
	held       bindingHeap
	offers     list.List // *binding only ever offered, oldest first
	promises   list.List // *binding with a promise on disk (promise.go), oldest first
}

func newPool(start, end uint32, excluded map[uint32]bool) *pool {
	p := &pool{start: start, end: end, excluded: excluded, avail: newBitset(end - start + 1)}
	for u := start; ; u++ {
		if !excluded[u] {
			p.avail.set(u - start)
		}
		if u == end {
			break
		}
	}
	return p
}

// low is ip's number in the pool's arithmetic and whether ip is of the
// pool's family (and, for IPv6, its upper 96 bits).
func (p *pool) low(ip netip.Addr) (uint32, bool) {
	if !p.v6 {
		return u32(ip), ip.Is4()
	}
	if !ip.Is6() {
		return 0, false
	}
	a := ip.As16()
	return binary.BigEndian.Uint32(a[12:]), [12]byte(a[:12]) == p.hi
}

// addr is the address numbered u (low's inverse).
func (p *pool) addr(u uint32) netip.Addr {
	if !p.v6 {
		return addrU32(u)
	}
	var a [16]byte
	copy(a[:], p.hi[:])
	binary.BigEndian.PutUint32(a[12:], u)
	return netip.AddrFrom16(a)
}

// inRange: an address of the range (handed out or not).
func (p *pool) inRange(ip netip.Addr) bool {
	u, ok := p.low(ip)
	return ok && u >= p.start && u <= p.end
}

// poolable: an address of the range that may be handed out.
func (p *pool) poolable(ip netip.Addr) bool {
	u, _ := p.low(ip)
	return p.inRange(ip) && !p.excluded[u]
}

// setAvail marks a poolable ip available (on) or not.
func (p *pool) setAvail(ip netip.Addr, on bool) {
	u, _ := p.low(ip)
	if on {
		p.avail.set(u - p.start)
	} else {
		p.avail.clear(u - p.start)
	}
}

// reservedUntil orders the held heap: when the binding's hold on its
// address ends (lease or offer, whichever is later).
func reservedUntil(b *binding) time.Time {
	if b.offerUntil.After(b.expiry) {
		return b.offerUntil
	}
	return b.expiry
}

// bindingHeap is a min-heap of bindings by reservedUntil; each binding
// knows its index (heapIdx, -1 when not in a heap).
type bindingHeap []*binding

func (h bindingHeap) Len() int { return len(h) }
func (h bindingHeap) Less(i, j int) bool {
	return reservedUntil(h[i]).Before(reservedUntil(h[j]))
}
func (h bindingHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *bindingHeap) Push(x any) {
	b := x.(*binding)
	b.heapIdx = len(*h)
	*h = append(*h, b)
}
func (h *bindingHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	b.heapIdx = -1
	return b
}

// bitset is a set of integers below n with "the next member at or after
// i" in O(log64 n): level 0 holds the members, and bit j of each higher
// level says whether word j of the level below has any. 2 MiB for the
// largest range (maxRangeSize addresses), 2 KiB for a /16.
type bitset struct {
	n      uint32
	levels [][]uint64
}

func newBitset(n uint32) *bitset {
	b := &bitset{n: n}
	for size := n; ; {
		words := (size + 63) / 64
		b.levels = append(b.levels, make([]uint64, max(words, 1)))
		if words <= 1 {
			return b
		}
		size = words
	}
}

func (b *bitset) set(i uint32) {
	for _, lv := range b.levels {
		w := i / 64
		was := lv[w]
		lv[w] |= 1 << (i % 64)
		if was != 0 {
			return // the levels above already mark this word
		}
		i = w
	}
}

func (b *bitset) clear(i uint32) {
	for _, lv := range b.levels {
		w := i / 64
		lv[w] &^= 1 << (i % 64)
		if lv[w] != 0 {
			return
		}
		i = w
	}
}

func (b *bitset) has(i uint32) bool {
	return i < b.n && b.levels[0][i/64]&(1<<(i%64)) != 0
}

// next returns the smallest member at or after i.
func (b *bitset) next(i uint32) (uint32, bool) {
	if i >= b.n {
		return 0, false
	}
	pos, level := i, 0
	for {
		lv := b.levels[level]
		w := pos / 64
		if int(w) >= len(lv) {
			return 0, false
		}
		if m := lv[w] & (^uint64(0) << (pos % 64)); m != 0 {
			pos = w*64 + uint32(bits.TrailingZeros64(m))
			break
		}
		// Nothing left in this word: look from the next word, one
		// level up.
		if level++; level == len(b.levels) {
			return 0, false
		}
		pos = w + 1
	}
	for ; level > 0; level-- {
		pos = pos*64 + uint32(bits.TrailingZeros64(b.levels[level-1][pos]))
	}
	return pos, true
}

// nextWrap is next from i, wrapping round to 0.
func (b *bitset) nextWrap(i uint32) (uint32, bool) {
	if v, ok := b.next(i); ok {
		return v, true
	}
	return b.next(0)
}

// Pool bookkeeping of the lease table. Every change of byIP goes through
// hold and unhold, every change of a binding's expiry or offerUntil is
// followed by touch.

// poolOf returns the pool whose range holds ip, or nil.
func (t *leaseTable) poolOf(ip netip.Addr) *pool {
	for _, p := range t.pools {
		if p.inRange(ip) {
			return p
		}
	}
	return nil
}

// hold: b now holds b.ip in byIP.
func (t *leaseTable) hold(b *binding) {
	p := t.poolOf(b.ip)
	if p == nil || !p.poolable(b.ip) {
		return
	}
	p.setAvail(b.ip, false)
	b.pool = p
	heap.Push(&p.held, b)
	t.touch(b)
}

// unregister takes b out of its pool's indexes (it no longer holds its
// address, or holds it only as a stale hint).
func (t *leaseTable) unregister(b *binding) {
	p := b.pool
	if p == nil {
		return
	}
	if b.heapIdx >= 0 {
		heap.Remove(&p.held, b.heapIdx)
	}
	if b.offerEl != nil {
		p.offers.Remove(b.offerEl)
		b.offerEl = nil
	}
	b.pool = nil
}

// unhold: b no longer holds ip, and nobody else does: the address is
// available again, unless it is quarantined (DECLINE).
func (t *leaseTable) unhold(ip netip.Addr, b *binding) {
	t.unregister(b)
	if _, q := t.declined[ip]; q {
		return
	}
	if p := t.poolOf(ip); p != nil && p.poolable(ip) {
		p.setAvail(ip, true)
	}
}

// touch re-sorts b after its expiry or offerUntil changed: its place in
// the held heap, and whether (and where) it is in the offer queue.
func (t *leaseTable) touch(b *binding) {
	p := b.pool
	if p == nil {
		return
	}
	heap.Fix(&p.held, b.heapIdx)
	offer := b.expiry.IsZero() && !b.offerUntil.IsZero() && !b.static
	switch {
	case offer && b.offerEl == nil:
		b.offerEl = p.offers.PushBack(b)
	case offer: // offered again: a fresh offer
		p.offers.MoveToBack(b.offerEl)
	case b.offerEl != nil:
		p.offers.Remove(b.offerEl)
		b.offerEl = nil
	}
}

// quarantine marks ip declined until until: not handed out meanwhile.
// Quarantines are queued in the order they are made, which is the order
// they end (DeclineHold is fixed; restore sorts a lease file's).
func (t *leaseTable) quarantine(ip netip.Addr, until time.Time) {
	t.declined[ip] = until
	t.declineQ.PushBack(declinedEntry{ip, until})
	if p := t.poolOf(ip); p != nil && p.poolable(ip) {
		p.setAvail(ip, false)
	}
}

// unquarantine ends ip's quarantine (its time is up).
func (t *leaseTable) unquarantine(ip netip.Addr) {
	delete(t.declined, ip)
	if p := t.poolOf(ip); p != nil && p.poolable(ip) && t.byIP[ip] == nil {
		p.setAvail(ip, true)
	}
}

// owner is the key of b's owner for the per-owner limit and
// leaseTable.macs: its hardware address (DHCPv4), or the DUID after the
// IAID in its client id (a DHCPv6 table, v6.go).
func (t *leaseTable) owner(b *binding) string {
	if t.v6 {
		return duidOwner(b.clientID)
	}
	return string(b.mac)
}

// macAdd and macDel keep leaseTable.macs, the bindings by owner.
func (t *leaseTable) macAdd(b *binding) {
	if k := t.owner(b); k != "" {
		t.macs[k] = append(t.macs[k], b)
	}
}

func (t *leaseTable) macDel(b *binding) {
	k := t.owner(b)
	l := t.macs[k]
	for i, o := range l {
		if o == b {
			l[i] = l[len(l)-1]
			l[len(l)-1] = nil
			l = l[:len(l)-1]
			break
		}
	}
	if len(l) == 0 {
		delete(t.macs, k)
	} else {
		t.macs[k] = l
	}
}
