package dhcp

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// leaseOf is the lease of ip on disk at path (ok false: none).
func leaseOf(t *testing.T, path string, ip any) (Lease, bool) {
	t.Helper()
	for _, l := range leasesOnDisk(t, path) {
		if l.IP == ip {
			return l, true
		}
	}
	return Lease{}, false
}

// An OFFER writes its lease ahead (a promise): once that write is done,
// the ACK finds its lease on disk and needs no write of its own; the
// journal then covers the ACK at every moment. A promise caps per pool,
// and one whose offer lapsed is retracted.
func TestOfferPromise(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := newServer(t, withLeaseFile(path)) // 10 addresses: 1 promise at a time
	var writes atomic.Int64
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		writes.Add(1)
		return real(f, off, data)
	}

	// mac 1: DISCOVER → the promise is written (Serve's committer does
	// this while the OFFER travels).
	offer, kick := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, t0)
	if offer == nil || kick != 0 || offer.kick == 0 {
		t.Fatalf("OFFER %v, seq %d: want an OFFER to send now with a promise to write", offer != nil && offer.kick != 0, kick)
	}
	if err := s.store.wait(offer.kick); err != nil {
		t.Fatal(err)
	}
	l, ok := leaseOf(t, path, yiaddr(offer))
	if want := t0.Add(OfferHold + time.Hour); !ok || l.MAC.String() != mac(1).String() || !l.Expiry.Equal(want) {
		t.Fatalf("after the OFFER, disk holds %+v (%v); want the promise to %v until %v", l, ok, mac(1), want)
	}
	w := writes.Load()

	// The REQUEST, 30 s later: its ACK is covered by the promise.
	at := t0.Add(30 * time.Second)
	ack, seq := s.handle(selecting(t, mac(1), offer, inBcast), inBcast, at)
	if ack == nil || ack.Pkt.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST: %v", ack)
	}
	if seq == 0 || !s.store.covers(seq) || writes.Load() != w {
		t.Fatalf("ACK waits for change %d (covered %v, %d writes since the promise): want it covered by the promise", seq, s.store.covers(seq), writes.Load()-w)
	}
	if l, _ := leaseOf(t, path, yiaddr(ack)); l.Expiry.Before(at.Add(time.Hour)) {
		t.Fatalf("disk holds the lease until %v, before the ACK's end %v", l.Expiry, at.Add(time.Hour))
	}

	// mac 2 takes the pool's one promise; mac 3's offer gets none while
	// mac 2's offer stands, so its ACK needs a write of its own.
	o2, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(2)), inBcast, at)
	o3, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(3)), inBcast, at)
	if o2.kick == 0 || o3.kick != 0 {
		t.Fatalf("kicks %d, %d: want a promise for mac 2 only (cap 1)", o2.kick, o3.kick)
	}
	if err := s.store.wait(o2.kick); err != nil {
		t.Fatal(err)
	}
	if _, seq := s.handle(selecting(t, mac(3), o3, inBcast), inBcast, at); seq == 0 || s.store.covers(seq) {
		t.Fatalf("mac 3's ACK waits for change %d, covered %v: want a write of its own", seq, s.store.covers(seq))
	}

	// Power cut now: mac 2's promise stands on disk, so a fresh server
	// never offers its address to anyone else.
	cut := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(cut, mustRead(t, path), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := newServer(t, withLeaseFile(cut))
	for i := 10; i < 17; i++ {
		if o := handle(t, s2, build(t, dhcpv4.MessageTypeDiscover, mac(i)), inBcast, at); o != nil && yiaddr(o) == yiaddr(o2) {
			t.Fatalf("after a power cut, mac %d was offered %v, promised to mac 2", i, yiaddr(o))
		}
	}

	// mac 2 never asks: past OfferHold, mac 4's offer retires the
	// promise, and the journal no longer holds mac 2's address.
	later := at.Add(OfferHold + time.Second)
	o4, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(4)), inBcast, later)
	if o4 == nil || o4.kick == 0 {
		t.Fatalf("mac 4: %v: want an OFFER with a promise", o4)
	}
	if err := s.store.wait(o4.kick); err != nil {
		t.Fatal(err)
	}
	if l, ok := leaseOf(t, path, yiaddr(o2)); ok && l.MAC.String() == mac(2).String() && l.Expiry.After(later) {
		t.Fatalf("mac 2's lapsed promise is still on disk: %+v", l)
	}
}

// A DISCOVER flood with random MACs that never REQUEST, cut by a power
// failure: the journal holds at most a pool's promise share of the
// flood's addresses (1 in 8), so the pool stays usable after restart.
func TestOfferPromiseFloodBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := newServer(t, func(s *Server) {
		s.LeaseFile = path
		s.Subnets[0].RangeStart = netip.MustParseAddr("192.0.2.10")
		s.Subnets[0].RangeEnd = netip.MustParseAddr("192.0.2.250") // 241 addresses: 30 promises
	})
	now := t0
	for i := range 3000 {
		o, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(1000+i)), inBcast, now)
		if o != nil && o.kick != 0 && i%7 == 0 { // the committer keeps up now and then
			if err := s.store.wait(o.kick); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(50 * time.Millisecond) // 3000 offers over 150 s: many lapse and are reclaimed
	}
	s.mu.Lock()
	s.leases.seq++ // write whatever is dirty, as the next ACK would
	seq := s.leases.seq
	outstanding := s.leases.pools[0].promises.Len()
	s.mu.Unlock()
	if err := s.store.wait(seq); err != nil {
		t.Fatal(err)
	}
	if outstanding > 30 {
		t.Fatalf("%d promises outstanding, cap 30", outstanding)
	}
	cut := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(cut, mustRead(t, path), 0o600); err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, l := range leasesOnDisk(t, cut) {
		if l.Expiry.After(now) {
			held++
		}
	}
	if held == 0 || held > 30 {
		t.Fatalf("after a power cut %d addresses stay held by the flood; want 1..30 (the pool's promise share)", held)
	}
	// The restarted server still serves a real client from the rest.
	s2 := newServer(t, func(s *Server) {
		s.LeaseFile = cut
		s.Subnets[0].RangeStart = netip.MustParseAddr("192.0.2.10")
		s.Subnets[0].RangeEnd = netip.MustParseAddr("192.0.2.250")
	})
	if ack := dora(t, s2, mac(1), inBcast, now); ack == nil {
		t.Fatal("no lease for a real client after the flood and the power cut")
	}
}

// A power cut after any append of a DISCOVER flood (not only at a quiet
// moment) leaves at most the pool's promise share held.
func TestOfferPromiseBoundEveryAppend(t *testing.T) {
	for _, every := range []int{1, 3, 7, 50} {
		path := filepath.Join(t.TempDir(), "leases")
		s := newServer(t, func(s *Server) {
			s.LeaseFile = path
			s.Subnets[0].RangeStart = netip.MustParseAddr("192.0.2.10")
			s.Subnets[0].RangeEnd = netip.MustParseAddr("192.0.2.250")
		})
		now := t0
		worst := 0
		for i := range 3000 {
			// a few MACs re-DISCOVER, most are fresh
			m := mac(1000 + i)
			if i%3 == 0 {
				m = mac(1000 + i%40)
			}
			o, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, m), inBcast, now)
			if o != nil && o.kick != 0 && i%every == 0 {
				if err := s.store.wait(o.kick); err != nil {
					t.Fatal(err)
				}
				held := 0
				for _, l := range leasesOnDisk(t, path) {
					if l.Expiry.After(now) {
						held++
					}
				}
				worst = max(worst, held)
			}
			now = now.Add(50 * time.Millisecond)
		}
		t.Logf("every %d: worst held on disk after an append: %d (cap 30)", every, worst)
		if worst > 30 {
			t.Errorf("every %d: %d addresses held on disk at a power cut, cap 30", every, worst)
		}
	}
}

// A RELEASE retracts a standing promise: the journal must not keep the
// released address leased to its client past the lease it was ACKed
// (review finding; it did, until offer time + OfferHold + lease).
func TestOfferPromiseReleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := newServer(t, withLeaseFile(path))
	ack := dora(t, s, mac(1), inBcast, t0) // lease to t0+1h, on disk
	ip := yiaddr(ack)
	at := t0.Add(10 * time.Minute)
	o, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, at)
	if o == nil || o.kick == 0 || yiaddr(o) != ip {
		t.Fatalf("re-DISCOVER: %v", o)
	}
	if err := s.store.wait(o.kick); err != nil {
		t.Fatal(err)
	}
	rel := build(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP.AsSlice())))
	handle(t, s, rel, inBcast, at.Add(time.Second))
	// the next append (another client's ACK) carries the release
	s.mu.Lock()
	s.leases.seq++
	seq := s.leases.seq
	s.mu.Unlock()
	if err := s.store.wait(seq); err != nil {
		t.Fatal(err)
	}
	l, ok := leaseOf(t, path, ip)
	t.Logf("after RELEASE at %v, disk holds %v until %v (ok %v); ACKed lease ended %v", at.Add(time.Second).Sub(t0), l.MAC, l.Expiry.Sub(t0), ok, time.Hour)
	if ok && l.Expiry.After(at.Add(time.Second)) {
		t.Errorf("released address still leased on disk until t0+%v", l.Expiry.Sub(t0))
	}
}

// DISCOVERs repeated from one MAC whose promise stands write no more
// records: the standing promise covers an ACK for half a hold (review
// finding: each one cost an append and an fdatasync, 30 MACs in a loop
// kept the disk syncing).
func TestOfferPromiseRepeatedDiscover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := newServer(t, withLeaseFile(path))
	var writes atomic.Int64
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		writes.Add(1)
		return real(f, off, data)
	}
	now := t0
	for range 200 {
		o, _ := s.handle(build(t, dhcpv4.MessageTypeDiscover, mac(1)), inBcast, now)
		if o.kick != 0 {
			if err := s.store.wait(o.kick); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(10 * time.Millisecond)
	}
	if n := writes.Load(); n > 2 {
		t.Fatalf("200 DISCOVERs from one MAC within 2 s: %d appends (each an fdatasync), want 1", n)
	}
}
