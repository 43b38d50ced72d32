package dhcp

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// TestBitset: next and nextWrap agree with a plain scan over random sets
// of several sizes (one word, three levels).
func TestBitset(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []uint32{1, 63, 64, 65, 4096, 4097, 300000} {
		b := newBitset(n)
		member := make([]bool, n)
		for range 2000 {
			i := uint32(rng.IntN(int(n)))
			if rng.IntN(3) == 0 {
				b.clear(i)
				member[i] = false
			} else {
				b.set(i)
				member[i] = true
			}
			from := uint32(rng.IntN(int(n)))
			want, ok := uint32(0), false
			for j := from; j < n; j++ {
				if member[j] {
					want, ok = j, true
					break
				}
			}
			if got, gok := b.next(from); got != want || gok != ok {
				t.Fatalf("n %d: next(%d) = %d %v, want %d %v", n, from, got, gok, want, ok)
			}
			if b.has(i) != member[i] {
				t.Fatalf("n %d: has(%d) = %v", n, i, b.has(i))
			}
		}
		for i := range n {
			b.clear(i)
		}
		if _, ok := b.nextWrap(0); ok {
			t.Fatalf("n %d: empty set has a member", n)
		}
	}
}

// checkIndexes verifies the pool indexes against the lease table they
// index (pool.go's invariants).
func checkIndexes(t *testing.T, s *Server) {
	t.Helper()
	lt := &s.leases
	for pi, p := range lt.pools {
		for u := p.start; ; u++ {
			ip := addrU32(u)
			_, q := lt.declined[ip]
			want := !p.excluded[u] && lt.byIP[ip] == nil && !q
			if got := p.avail.has(u - p.start); got != want {
				t.Fatalf("pool %d: %v available %v, want %v (holder %v, declined %v)", pi, ip, got, want, lt.byIP[ip], q)
			}
			if u == p.end {
				break
			}
		}
		for i, b := range p.held {
			if b.heapIdx != i || b.pool != p || lt.byIP[b.ip] != b {
				t.Fatalf("pool %d: held[%d] = %v idx %d, holder of its address %v", pi, i, b.ip, b.heapIdx, lt.byIP[b.ip])
			}
			if i > 0 && reservedUntil(b).Before(reservedUntil(p.held[(i-1)/2])) {
				t.Fatalf("pool %d: heap order broken at %d", pi, i)
			}
		}
		n := 0
		for e := p.offers.Front(); e != nil; e = e.Next() {
			b := e.Value.(*binding)
			if b.offerEl != e || b.pool != p || !b.expiry.IsZero() || b.offerUntil.IsZero() || b.static {
				t.Fatalf("pool %d: offer queue holds %v (expiry %v, offer %v)", pi, b.ip, b.expiry, b.offerUntil)
			}
			n++
		}
		registered := 0
		for ip, b := range lt.byIP {
			if lt.poolOf(ip) == p && p.poolable(ip) {
				registered++
				if b.pool != p {
					t.Fatalf("pool %d: holder of %v not in the heap", pi, ip)
				}
			}
		}
		if registered != len(p.held) {
			t.Fatalf("pool %d: %d holders, %d in the heap", pi, registered, len(p.held))
		}
	}
	total := 0
	for mac, l := range lt.macs {
		for _, b := range l {
			if string(b.mac) != mac || lt.byKey[b.key] != b {
				t.Fatalf("macs[%x] holds a stale binding %v", mac, b.ip)
			}
		}
		total += len(l)
	}
	withMAC := 0
	for _, b := range lt.byKey {
		if len(b.mac) > 0 {
			withMAC++
		}
	}
	if total != withMAC {
		t.Fatalf("macs index has %d bindings, the table %d with a MAC", total, withMAC)
	}
}

// TestPoolIndexesConsistent drives a small pool through random DISCOVERs,
// REQUESTs, RELEASEs, DECLINEs, RENEWs, client-id changes and the passing
// of time, checking every index after each step.
func TestPoolIndexesConsistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := newServer(t, func(s *Server) {
		s.Log = zerolog.Nop()
		s.Hosts = []Host{{MAC: mac(900), IP: netip.MustParseAddr("192.0.2.105")}}
		s.Subnets[0].LeaseTime = 10 * time.Minute
	})
	now := t0
	offers := map[int]*Outgoing{}
	acks := map[int]*Outgoing{}
	for step := range 4000 {
		c := rng.IntN(40)
		hw := mac(c)
		var mods []dhcpv4.Modifier
		if c%7 == 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, byte(rng.IntN(3))})))
		}
		switch op := rng.IntN(10); {
		case op < 4:
			if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, hw, mods...), inBcast, now); o != nil {
				offers[c] = o
			}
		case op < 6:
			if o := offers[c]; o != nil {
				if a := handle(t, s, selecting(t, hw, o, inBcast, mods...), inBcast, now); a != nil && a.Pkt.MessageType() == dhcpv4.MessageTypeAck {
					acks[c] = a
				}
			}
		case op == 6:
			if a := acks[c]; a != nil {
				handle(t, s, build(t, dhcpv4.MessageTypeRelease, hw, append(mods, dhcpv4.WithClientIP(a.Pkt.YourIPAddr))...), inBcast, now)
			}
		case op == 7:
			if a := acks[c]; a != nil && rng.IntN(4) == 0 {
				handle(t, s, build(t, dhcpv4.MessageTypeDecline, hw, append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.Pkt.YourIPAddr)))...), inBcast, now)
			}
		case op == 8:
			if a := acks[c]; a != nil {
				handle(t, s, build(t, dhcpv4.MessageTypeRequest, hw, append(mods, dhcpv4.WithClientIP(a.Pkt.YourIPAddr))...), inBcast, now)
			}
		default:
			now = now.Add(time.Duration(rng.IntN(90)) * time.Second)
		}
		s.mu.Lock()
		checkIndexes(t, s)
		s.mu.Unlock()
		if t.Failed() {
			t.Fatalf("after step %d", step)
		}
	}
}

// starvePool fills sub's pool with offers from random MACs that never
// REQUEST (a starvation run) and returns how many were made.
func starvePool(t testing.TB, s *Server, in Incoming, now time.Time, rng *rand.Rand) int {
	n := 0
	for {
		hw := net.HardwareAddr{0x02, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
		if o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, hw), in, now); o == nil {
			return n
		}
		n++
	}
}

// TestDiscoverCostFullPool is the attack of issue 13 finding 10: a /18
// pool filled by a starvation run (16,380 offers nobody REQUESTs), then
// DISCOVERs from new MACs — the flood's steady state. Each used to scan
// the whole range, then every binding, under the server's lock (13.5 ms
// each: about 75 packets/s saturated DHCP). The work per DISCOVER, in
// addresses and records looked at (leaseTable.probes), must not depend
// on the pool's size: at most a handful whether the pool is full
// (answered with nothing), the oldest offer is reclaimed, or leases
// lapsed.
func TestDiscoverCostFullPool(t *testing.T) {
	s := newServer(t, func(s *Server) {
		s.Log = zerolog.Nop()
		s.Subnets = []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/18"),
			RangeStart: netip.MustParseAddr("10.0.0.1"), RangeEnd: netip.MustParseAddr("10.0.63.254"),
			Router: netip.MustParseAddr("10.0.0.1")}}
	})
	in := inBcast
	in.IfAddr = netip.MustParseAddr("10.0.0.2")
	rng := rand.New(rand.NewPCG(7, 8))
	n := starvePool(t, s, in, t0, rng)
	if n != 16380 { // 16,384 addresses less network, broadcast, router, our own
		t.Fatalf("starvation run got %d offers, want 16380", n)
	}
	cost := func(name string, now time.Time, wantOffer bool) uint64 {
		t.Helper()
		s.mu.Lock()
		before := s.leases.probes
		s.mu.Unlock()
		o := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, net.HardwareAddr{0x06, 0, 0, 0, byte(rng.IntN(256)), byte(rng.IntN(256))}), in, now)
		s.mu.Lock()
		p := s.leases.probes - before
		s.mu.Unlock()
		if (o != nil) != wantOffer {
			t.Fatalf("%s: offer %v, want one: %v", name, o, wantOffer)
		}
		if name != "after OfferHold" {
			t.Logf("%s: %d addresses/records looked at", name, p)
		}
		return p
	}
	const most = 8
	if p := cost("pool full, offers within OfferGrace", t0.Add(time.Second), false); p > most {
		t.Errorf("DISCOVER into a full /18: %d probes, want at most %d", p, most)
	}
	if p := cost("pool full, oldest offer reclaimed", t0.Add(OfferGrace+time.Second), true); p > most {
		t.Errorf("DISCOVER reclaiming an offer in a /18: %d probes, want at most %d", p, most)
	}
	// All offers lapse (OfferHold): each request drops at most
	// sweepBudget of them (oldest first) and takes a free address.
	later := t0.Add(OfferHold + time.Second)
	worst := uint64(0)
	for range 100 {
		worst = max(worst, cost("after OfferHold", later, true))
	}
	t.Logf("after OfferHold: at most %d addresses/records looked at per DISCOVER", worst)
	if worst > sweepBudget+most {
		t.Errorf("DISCOVER after every offer lapsed: up to %d probes, want at most %d", worst, sweepBudget+most)
	}
	s.mu.Lock()
	checkIndexes(t, s)
	s.mu.Unlock()
}

// BenchmarkDiscoverFullPool is one DISCOVER from a new MAC into a /18
// filled by a starvation run and kept full (each reclaims the oldest
// offer): the cost of the flood's steady state under the server's lock.
func BenchmarkDiscoverFullPool(b *testing.B) {
	s := newServer(b, func(s *Server) {
		s.Log = zerolog.Nop()
		s.Subnets = []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/18"),
			RangeStart: netip.MustParseAddr("10.0.0.1"), RangeEnd: netip.MustParseAddr("10.0.63.254")}}
	})
	in := inBcast
	in.IfAddr = netip.MustParseAddr("10.0.0.2")
	rng := rand.New(rand.NewPCG(9, 10))
	starvePool(b, s, in, t0, rng)
	reqs := make([]*dhcpv4.DHCPv4, 4096)
	for i := range reqs {
		reqs[i] = build(b, dhcpv4.MessageTypeDiscover, net.HardwareAddr{0x06, 1, 0, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	now := t0.Add(OfferGrace + time.Second)
	i := 0
	for b.Loop() {
		// A new MAC each time (the table forgets reclaimed offers).
		r := reqs[i%len(reqs)]
		r.ClientHWAddr = net.HardwareAddr{0x06, 2, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		now = now.Add(time.Millisecond) // the oldest offer is then 16 s old: past OfferGrace, not lapsed
		if o, err := s.Handle(r, in, now); err != nil || o == nil {
			b.Fatalf("DISCOVER %d: %v %v", i, o, err)
		}
		i++
	}
	b.ReportMetric(float64(s.Counters.OffersReclaimed.Load())/float64(i), "reclaims/op")
}
