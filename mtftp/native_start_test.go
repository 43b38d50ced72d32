package mtftp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

func TestStartPolicy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for _, c := range []struct {
		name      string
		p         StartPolicy
		receivers int
		lastJoin  time.Time
		now       time.Time
		start     bool
		next      time.Time
	}{
		{"settling", StartPolicy{MaxWait: 5 * time.Second, Settle: time.Second}, 4, ms(300), ms(900), false, ms(1300)},
		{"settled", StartPolicy{MaxWait: 5 * time.Second, Settle: time.Second}, 4, ms(300), ms(1300), true, ms(1300)},
		{"trickle hits max wait", StartPolicy{MaxWait: 5 * time.Second, Settle: time.Second}, 40, ms(4900), ms(5000), true, ms(5000)},
		{"settle beyond max wait", StartPolicy{MaxWait: 2 * time.Second, Settle: time.Second}, 1, ms(1500), ms(1600), false, ms(2000)},
		{"min receivers not yet", StartPolicy{MinReceivers: 3, MaxWait: 5 * time.Second, Settle: time.Second}, 2, ms(0), ms(3000), false, ms(5000)},
		{"min receivers met", StartPolicy{MinReceivers: 3, MaxWait: 5 * time.Second}, 3, ms(10), ms(20), true, ms(20)},
		{"none", StartPolicy{MaxWait: -1, Settle: -1}, 1, ms(0), ms(0), true, ms(0)},
	} {
		start, next := c.p.startAt(c.receivers, t0, c.lastJoin, c.now)
		if start != c.start || (!start && !next.Equal(c.next)) {
			t.Errorf("%s: start=%v next=%v, want %v %v", c.name, start, next.Sub(t0), c.start, c.next.Sub(t0))
		}
	}
}

// TestStartPolicyResolve: a rule for the file wins over the request; a
// request's durations are capped; without either the server's defaults.
func TestStartPolicyResolve(t *testing.T) {
	s := &Server{NativeStart: StartPolicy{Settle: 2 * time.Second},
		NativeStartRules: []StartRule{{Pattern: "images/*.img", StartPolicy: StartPolicy{MinReceivers: 20}}}}
	req := &tftp.Request{Options: []tftp.Option{{Name: OptMinReceivers, Value: "7"}, {Name: OptMaxWait, Value: "3600000"}, {Name: OptSettle, Value: "250"}}}
	if p := s.startPolicy("images/room.img", req); p != (StartPolicy{MinReceivers: 20, MaxWait: DefaultNativeMaxWait, Settle: 2 * time.Second}) {
		t.Errorf("rule: %+v", p)
	}
	// Longer than the operator's policy up to the cap; a shorter settle is
	// not taken (the room could be split).
	if p := s.startPolicy("vmlinuz", req); p != (StartPolicy{MinReceivers: 7, MaxWait: DefaultNativeMaxWaitCap, Settle: 2 * time.Second}) {
		t.Errorf("request: %+v", p)
	}
	shorter := &tftp.Request{Options: []tftp.Option{{Name: OptMaxWait, Value: "0"}, {Name: OptSettle, Value: "9223372036854775807"}}}
	if p := s.startPolicy("vmlinuz", shorter); p != (StartPolicy{MaxWait: DefaultNativeMaxWait, Settle: DefaultNativeMaxWaitCap}) {
		t.Errorf("a shorter wait and an overflowing settle: %+v", p)
	}
	if p := s.startPolicy("vmlinuz", &tftp.Request{}); p != (StartPolicy{MaxWait: DefaultNativeMaxWait, Settle: 2 * time.Second}) {
		t.Errorf("defaults: %+v", p)
	}
}

// TestNativeWantSchedule: a partial receiver's stripes go out at their
// first position from the next group on, each once, and nothing else.
func TestNativeWantSchedule(t *testing.T) {
	g, _ := newGeometry(1456*64*200, 1456, 64, 64) // 200 stripes
	peer := netip.MustParseAddrPort("192.0.2.101:4000")
	ns := &nativeSession{g: g, data: make([]byte, g.size), view: &sessionView{}, s: &Server{},
		receivers: map[netip.AddrPort]*nativeRecv{peer: {peer: peer, partial: true}}, wake: make(chan struct{}, 1),
		seq: 64, grpSet: true}
	bits := make([]byte, 25)
	for _, st := range []int{5, 150, 199} {
		bits[st/8] |= 1 << (st % 8)
	}
	p := wantPkt{First: 0, Count: 200, Bits: bits}
	at, ok := ns.want(peer, &p)
	if !ok || at != 128 {
		t.Fatalf("want: from %d ok %v, want 128", at, ok)
	}
	if again, _ := ns.want(peer, &p); again != at {
		t.Fatalf("a repeated WANT got from %d, want %d", again, at)
	}
	ns.grpSet, ns.gi, ns.seq = false, 0, 128 // the group under way has ended
	hdrs := make([]byte, nativeMaxBatch*dataHdrLen)
	sent := map[uint32]int{}
	for i := 0; ns.seq < ns.dataUntil; i++ {
		for _, d := range ns.planCarousel(nil, nativeMaxBatch, hdrs) {
			h, _, _ := parseDataHdr(append(append([]byte(nil), d.Hdr...), d.Payload...))
			sent[h.Pos]++
		}
		if i > 1000 {
			t.Fatal("carousel does not end")
		}
	}
	want := map[uint32]int{150: 64, 199: 64, 205: 64} // stripe 5 comes round in the next pass
	if len(sent) != len(want) {
		t.Fatalf("sent positions %v, want %v", sent, want)
	}
	for pos, n := range want {
		if sent[pos] != n {
			t.Fatalf("sent positions %v, want %v", sent, want)
		}
	}
	if other := netip.MustParseAddrPort("192.0.2.102:4000"); func() bool { _, ok := ns.want(other, &p); return ok }() {
		t.Fatal("a WANT from a stranger was taken")
	}
}

// TestStartWaitsForWants: a session does not count a partial receiver as
// ready until its WANTs are in (starting earlier would push its first
// stripes to a second pass: measured 1.15× the image on the wire in the
// 20-machine lab room instead of 1.01×).
func TestStartWaitsForWants(t *testing.T) {
	g, _ := newGeometry(1456*64*10000, 1456, 64, 64) // 10000 stripes: two WANT segments
	peer := netip.MustParseAddrPort("192.0.2.101:4000")
	ns := &nativeSession{g: g, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1),
		receivers: map[netip.AddrPort]*nativeRecv{}}
	ns.join(peer, time.Now(), true, token{1})
	ns.expectWants(peer, 2)
	bits := make([]byte, maxWantBits/8)
	bits[0] = 1
	for i, w := range []wantPkt{{Token: token{1}, First: 0, Count: maxWantBits, Bits: bits}, {Token: token{1}, First: maxWantBits, Count: 10000 - maxWantBits, Bits: bits[:(10000-maxWantBits+7)/8]}} {
		ns.mu.Lock()
		pending := ns.wantsPending()
		ns.mu.Unlock()
		if !pending {
			t.Fatalf("after %d of 2 WANTs the session would start", i)
		}
		if _, ok := ns.want(peer, &w); !ok {
			t.Fatalf("WANT %d refused", i)
		}
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.wantsPending() {
		t.Fatal("both WANTs in, still pending")
	}
}
