package mtftp

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestNativeWireRoundTrip(t *testing.T) {
	sp := sessionPkt{ID: 7, Flags: flagSHA | flagIdle, Group: netip.MustParseAddrPort("239.255.0.9:1758"), Size: 123456789,
		ShardSize: 1456, K: 64, M: 64, Interleave: 64, Seq: 1 << 40, NakInterval: 50, Receivers: 500, RateKBps: 12000, Name: "boot/initrd.img"}
	sp.SHA256[3] = 9
	got, err := parseSession(appendSession(nil, &sp))
	if err != nil || got != sp {
		t.Fatalf("session round trip: %+v, %v", got, err)
	}
	st := statusPkt{ID: 7, Seen: 700, Lost: 51, GoodKBps: 9000, Complete: 3, FirstSeq: 2,
		Naks: []nak{{1, 3, 0b101}, {99, 64, ^uint64(0)}}}
	var back statusPkt
	if err := parseStatus(appendStatus(nil, &st), &back); err != nil || back.ID != 7 || back.Seen != 700 || back.Lost != 51 || len(back.Naks) != 2 || back.Naks[1] != st.Naks[1] {
		t.Fatalf("status round trip: %+v, %v", back, err)
	}
	h := dataHdr{opNativeRepair, 7, 1 << 31, 12345, 70}
	b := make([]byte, dataHdrLen, dataHdrLen+3)
	putDataHdr(b, h)
	if gh, payload, ok := parseDataHdr(append(b, 1, 2, 3)); !ok || gh != h || !bytes.Equal(payload, []byte{1, 2, 3}) {
		t.Fatalf("data header round trip: %+v %v %v", gh, payload, ok)
	}
	// Geometry a receiver cannot use is refused, not trusted.
	for _, bad := range []sessionPkt{
		{Group: sp.Group, ShardSize: 1456, K: 65, M: 1, Interleave: 1},                                   // K past the NAK bitmap
		{Group: sp.Group, ShardSize: 1456, K: 64, M: 200, Interleave: 1},                                 // more than 256 shards
		{Group: netip.MustParseAddrPort("224.0.0.1:1758"), ShardSize: 1456, K: 64, M: 64, Interleave: 1}, // outside 239.255/16
		{Group: sp.Group, ShardSize: 4, K: 64, M: 64, Interleave: 1},                                     // shard too small
		{Group: sp.Group, ShardSize: 1456, K: 64, M: 64, Interleave: 0},                                  // no interleave
		{Group: sp.Group, ShardSize: 1456, K: 64, M: 64, Interleave: 1, Size: 1 << 51},                   // absurd size
	} {
		if _, err := parseSession(appendSession(nil, &bad)); err == nil {
			t.Errorf("parseSession accepted %+v", bad)
		}
	}
}

// FuzzNativePackets: no packet makes a parser panic, and what parses
// encodes back to the same bytes.
func FuzzNativePackets(f *testing.F) {
	sp := sessionPkt{ID: 1, Group: netip.MustParseAddrPort("239.255.0.1:1758"), ShardSize: 1456, K: 64, M: 64, Interleave: 64, Name: "x"}
	f.Add(appendSession(nil, &sp))
	f.Add(appendStatus(nil, &statusPkt{ID: 1, Naks: []nak{{1, 2, 3}}}))
	f.Add(appendDone(nil, 1, token{1, 2}, true))
	f.Add(appendChallenge(nil, token{3}))
	f.Add(appendWant(nil, &wantPkt{ID: 1, First: 8192, Count: 9, Bits: []byte{0xff, 1}}))
	f.Add(appendWantAck(nil, &wantAckPkt{ID: 1, First: 8192, Count: 9, From: 64}))
	f.Add([]byte{0x4d, 0x44, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 2, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := parseSession(b); err == nil && !bytes.Equal(appendSession(nil, &p), b) {
			t.Errorf("session %x re-encodes differently", b)
		}
		var st statusPkt
		if err := parseStatus(b, &st); err == nil && !bytes.Equal(appendStatus(nil, &st), b) {
			t.Errorf("status %x re-encodes differently", b)
		}
		if p, err := parseWant(b); err == nil && !bytes.Equal(appendWant(nil, &p), b) {
			t.Errorf("want %x re-encodes differently", b)
		}
		if p, err := parseWantAck(b); err == nil && !bytes.Equal(appendWantAck(nil, &p), b) {
			t.Errorf("want ack %x re-encodes differently", b)
		}
		if c, err := parseChallenge(b); err == nil && !bytes.Equal(appendChallenge(nil, c), b) {
			t.Errorf("challenge %x re-encodes differently", b)
		}
		if id, tok, ok, err := parseDone(b); err == nil && !bytes.Equal(appendDone(nil, id, tok, ok), b) && b[len(b)-1] <= 1 {
			t.Errorf("done %x re-encodes differently", b)
		}
		parseDataHdr(b)
	})
}

// fakeReceiver is a receiver's state over an in-memory file, for feeding
// shards by hand.
func fakeReceiver(t *testing.T, g geometry) *recvState {
	t.Helper()
	enc, err := codec(g.k, g.m)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recvState{r: &NativeReceiver{}, g: g, enc: enc, data: make([]byte, g.size), parity: map[int64][][]byte{}}
	rc.have = make([][4]uint64, g.stripes)
	rc.count = make([]uint16, g.stripes)
	rc.dataHave = make([]uint16, g.stripes)
	rc.nakRound = make([]uint32, g.stripes)
	rc.gotRound = make([]uint32, g.stripes)
	for s := range g.stripes {
		rc.count[s] = uint16(g.k - g.dataIn(s))
		if g.dataIn(s) == 0 {
			rc.complete++
		}
	}
	return rc
}

// TestNativeRebuild: a receiver that lost data shards anywhere in a
// stripe — the file's short last block and the last stripe's zero padding
// included — rebuilds the exact bytes from any parity shards, and from the
// data shards its NAK names once the parity is spent.
func TestNativeRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int64{1, 100, 1456 * 64, 1456*64*3 + 1, 1456*64*2 + 1456*5 + 77} {
		g, err := newGeometry(size, 1456, 64, 64)
		if err != nil {
			t.Fatal(err)
		}
		file := make([]byte, size)
		for i := range file {
			file[i] = byte(rng.Uint32())
		}
		pc, err := newParityCache(g, 1<<20, nil) // small: stripes are evicted and encoded again
		if err != nil {
			t.Fatal(err)
		}
		rc := fakeReceiver(t, g)
		for st := range g.stripes {
			n := g.dataIn(st)
			lost := rng.IntN(n + 1) // up to the whole stripe
			perm := rng.Perm(n)
			for _, i := range perm[lost:] {
				off, sz := g.span(st, i)
				rc.store(st, i, file[off:off+int64(sz)])
			}
			// Parity shards from a random place in the parity range, as
			// if earlier repairs had been lost.
			first := rng.IntN(g.m - lost + 1)
			for j := first; j < first+lost && rc.dataHave[st] < uint16(n); j++ {
				p, err := pc.parity(file, st, j)
				if err != nil {
					t.Fatal(err)
				}
				rc.store(st, g.k+j, p)
			}
		}
		if rc.complete != g.stripes || !bytes.Equal(rc.data, file) {
			t.Fatalf("size %d: %d of %d stripes complete, bytes equal %v", size, rc.complete, g.stripes, bytes.Equal(rc.data, file))
		}
	}
}

// TestNativeCarouselInterleaved: a pass sends every block exactly once,
// and each batch's datagrams belong to distinct stripes while the group
// has enough of them (a lost burst costs a stripe one shard).
func TestNativeCarouselInterleaved(t *testing.T) {
	g, _ := newGeometry(1456*64*70+300, 1456, 64, 64) // 71 stripes: a group of 64 and one of 7
	ns := &nativeSession{g: g, data: make([]byte, g.size), dataUntil: uint64(g.stripes), allUntil: uint64(g.stripes), view: &sessionView{},
		s: &Server{}}
	hdrs := make([]byte, nativeMaxBatch*dataHdrLen)
	seen := map[[2]int64]bool{}
	for batch := 0; ns.seq < ns.dataUntil; batch++ {
		ds := ns.planCarousel(nil, nativeMaxBatch, hdrs)
		stripes, firstGroup := map[int64]bool{}, true
		for _, d := range ds {
			h, _, ok := parseDataHdr(append(append([]byte(nil), d.Hdr...), d.Payload...))
			if !ok {
				t.Fatal("bad header")
			}
			st := int64(h.Pos) % g.stripes
			if seen[[2]int64{st, int64(h.Shard)}] {
				t.Fatalf("stripe %d shard %d sent twice in one pass", st, h.Shard)
			}
			seen[[2]int64{st, int64(h.Shard)}] = true
			stripes[st] = true
			firstGroup = firstGroup && h.Pos < nativeInterleave
		}
		// In the first group (64 stripes) a batch of 64 is one shard of
		// each stripe.
		if firstGroup && len(stripes) != len(ds) {
			t.Fatalf("batch %d: %d datagrams over only %d stripes", batch, len(ds), len(stripes))
		}
		if batch > 10000 {
			t.Fatal("carousel does not end")
		}
	}
	if int64(len(seen)) != g.blocks {
		t.Fatalf("pass sent %d distinct blocks of %d", len(seen), g.blocks)
	}
	if ns.passes != 1 {
		t.Fatalf("passes = %d, want 1", ns.passes)
	}
}

// TestNativeNakAggregation: NAKs from several receivers for one stripe
// within the aggregation window become one repair round of the largest
// count; a NAK that cannot have seen that round yet is ignored.
func TestNativeNakAggregation(t *testing.T) {
	g, _ := newGeometry(1456*64*4, 1456, 64, 64)
	a, b := netip.MustParseAddrPort("192.0.2.101:5000"), netip.MustParseAddrPort("192.0.2.102:5000")
	ns := &nativeSession{g: g, data: make([]byte, g.size), s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1),
		receivers: map[netip.AddrPort]*nativeRecv{a: {peer: a}, b: {peer: b}}, need: map[int64]*repairReq{},
		credits: map[netip.Addr]*addrCredit{a.Addr(): {twentieths: 20 * 100}, b.Addr(): {twentieths: 20 * 100}},
		cursor:  map[int64]int{}, repaired: map[int64]repairMark{}}
	pc, _ := newParityCache(g, 1<<20, nil)
	hdrs := make([]byte, nativeMaxBatch*dataHdrLen)
	ns.status(a, &statusPkt{Naks: []nak{{Stripe: 2, Missing: 3}}})
	ns.status(b, &statusPkt{Naks: []nak{{Stripe: 2, Missing: 5}, {Stripe: 1, Missing: 1}}})
	now := time.Now()
	if ds, _ := ns.planRepairs(nil, 64, hdrs, pc, now); len(ds) != 0 {
		t.Fatalf("%d repairs sent inside the aggregation window", len(ds))
	}
	ds, err := ns.planRepairs(nil, 64, hdrs, pc, now.Add(time.Second))
	if err != nil || len(ds) != 6 {
		t.Fatalf("repairs after the window: %d (%v), want 5 + 1", len(ds), err)
	}
	// Interleaved: the first two shards are for different stripes.
	s0, _, _ := parseDataHdr(append(append([]byte(nil), ds[0].Hdr...), ds[0].Payload...))
	s1, _, _ := parseDataHdr(append(append([]byte(nil), ds[1].Hdr...), ds[1].Payload...))
	if s0.Pos == s1.Pos {
		t.Errorf("repairs not interleaved across stripes: %d, %d", s0.Pos, s1.Pos)
	}
	// a's NAK sent before the round reached it: ignored. One wanting more
	// than the round brought: queued.
	ns.status(a, &statusPkt{Naks: []nak{{Stripe: 2, Missing: 3}}})
	if len(ns.needOrder) != 0 {
		t.Fatalf("a stale NAK queued a repair: %v", ns.needOrder)
	}
	ns.status(a, &statusPkt{Naks: []nak{{Stripe: 2, Missing: 9}}})
	if len(ns.needOrder) != 1 || ns.need[2].count != 9 {
		t.Fatalf("a NAK wanting more was not queued: %v", ns.need)
	}
}
