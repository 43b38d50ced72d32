package dhcp

import (
	"net/netip"
	"time"
)

// Offer promises: the lease an OFFER may become is written to the journal
// ahead, while the OFFER travels and the client answers, so that the ACK
// usually finds its lease already on disk and leaves without waiting for
// an fdatasync of its own (docs/dhcp-leases.md, "Offer promises").
//
// The journal then holds, for the offered address, a lease to this client
// until promised = offer time + OfferHold + the lease time: any ACK given
// while the offer stands ends no later, so a power cut after it loses no
// lease. A promise whose offer ends unrequested is retracted with the next
// append; a power cut before that leaves the address held for its client
// until promised, never given to anyone else. Outstanding promises per
// pool are capped at one in promiseShare of its addresses, so a power cut
// during a DISCOVER flood strands at most that share until it expires.

// promiseShare: at most 1/promiseShare of a pool's addresses carry a
// promise at once. An eighth covers a room's worth of clients between
// OFFER and REQUEST in a /24 (30 of 241) while leaving 7/8 of any pool
// usable after a power cut during a flood.
const promiseShare = 8

// promiseCap is how many promises p may carry at once.
func (p *pool) promiseCap() int {
	return max(1, int(uint64(p.end-p.start+1)/promiseShare))
}

// promise writes ahead b's lease for the offer it was just given (b holds
// b.ip in a pool, offered until b.offerUntil) ending at until, and returns
// the change to write (0: none — no journal, no pool, a static host, or
// the pool's promises are all taken by live offers). The oldest promise
// is retired when its offer has lapsed.
func (t *leaseTable) promise(b *binding, until, now time.Time) uint64 {
	p := b.pool
	if t.dirty == nil || p == nil || b.static || !b.ip.IsValid() {
		return 0
	}
	if b.promiseEl == nil {
		if p.promises.Len() >= p.promiseCap() {
			old := p.promises.Front().Value.(*binding)
			if old.offerUntil.After(now) {
				return 0
			}
			t.unpromise(old)
		}
		b.promiseEl, b.promisePool = p.promises.PushBack(b), p
	} else {
		if !until.After(b.promised.Add(OfferHold / 2)) {
			// The standing promise still covers an ACK for half a hold:
			// a DISCOVER repeated in a loop forces no append (an ACK
			// past it waits for a write of its own).
			return 0
		}
		b.promisePool.promises.MoveToBack(b.promiseEl)
	}
	b.promised = until
	t.mark(b.ip)
	t.seq++
	b.promiseSeq = t.seq
	return t.seq
}

// promiseFor returns the change that wrote a promise covering a lease of
// ip to b until expiry (0: none does, the ACK needs its own write).
func (b *binding) promiseFor(ip netip.Addr, expiry time.Time) uint64 {
	if b == nil || b.promiseEl == nil || b.ip != ip || expiry.After(b.promised) {
		return 0
	}
	return b.promiseSeq
}

// unpromise ends b's promise, if any: an ACK replaced it, or the offer
// ended. The address is marked so that the journal's next append writes
// its record as it now is (a lease, a hint, or none), retracting the
// promise.
func (t *leaseTable) unpromise(b *binding) {
	if b.promiseEl == nil {
		return
	}
	b.promisePool.promises.Remove(b.promiseEl)
	b.promiseEl, b.promisePool, b.promised, b.promiseSeq = nil, nil, time.Time{}, 0
	if b.ip.IsValid() && t.byIP[b.ip] == b {
		t.mark(b.ip)
	}
}

// retractPromises ends every promise (at shutdown: no ACK can rely on
// them any more).
func (t *leaseTable) retractPromises() {
	for _, p := range t.pools {
		for e := p.promises.Front(); e != nil; e = p.promises.Front() {
			t.unpromise(e.Value.(*binding))
		}
	}
}
