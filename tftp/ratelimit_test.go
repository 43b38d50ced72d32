package tftp

import (
	"net/netip"
	"testing"
	"time"
)

func TestSourceLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := sourceLimiter{rate: 2, burst: 3, max: 8}
	a := netip.MustParseAddr("192.0.2.10")
	for i := range 3 {
		if !l.allow(a, t0) {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	if l.allow(a, t0) {
		t.Fatal("fourth request at once allowed past a burst of 3")
	}
	if !l.allow(a, t0.Add(500*time.Millisecond)) || l.allow(a, t0.Add(500*time.Millisecond)) {
		t.Fatal("after 0.5 s at 2/s exactly one more request should pass")
	}
	if !l.allow(netip.MustParseAddr("192.0.2.11"), t0) {
		t.Fatal("another address shares the first one's bucket")
	}
	// A flood from random (spoofed) sources never grows the table past max.
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), t0.Add(time.Second))
		if len(l.index) > 8 {
			t.Fatalf("%d buckets after %d sources, cap 8", len(l.index), i+1)
		}
	}
	off := sourceLimiter{}
	for range 100 {
		if !off.allow(a, t0) {
			t.Fatal("rate 0 must not limit")
		}
	}
}

// TestSourceLimiterSpoofedFlood performs the attack of issue 13, finding
// 13: a flood from ever new (spoofed) source addresses into a full table.
// Making room for each new source must look at one entry, not scan the
// table: probes counts the entries examined. The entry evicted is the one
// used least recently, so a client that keeps asking keeps its bucket
// (and an over-limit client its empty one) however many strangers come.
func TestSourceLimiterSpoofedFlood(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := sourceLimiter{rate: 100, burst: 200}
	for i := range DefaultMaxSources {
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), t0)
	}
	// A client over its limit, asking again all through the flood.
	greedy := netip.MustParseAddr("192.0.2.66")
	for l.allow(greedy, t0) {
	}
	const spoofed = 20000
	probes := l.probes
	for i := range spoofed {
		// 100 new sources per millisecond: the client's bucket refills by
		// one token every 10 ms meanwhile, never by its burst of 200.
		now := t0.Add(time.Duration(i) * 10 * time.Microsecond)
		l.allow(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), now)
		if i%1000 == 999 {
			got := 0
			for got < 1000 && l.allow(greedy, now) {
				got++
			}
			if got > 2 {
				t.Fatalf("after %d spoofed sources the over-limit client had %d requests granted at once: its bucket was evicted and made anew", i+1, got)
			}
		}
	}
	if n := l.probes - probes; n > spoofed {
		t.Fatalf("%d entries examined to make room for %d new sources, want at most one each", n, spoofed)
	}
	t.Logf("%d entries examined for %d new sources into a table of %d", l.probes-probes, spoofed, DefaultMaxSources)
}

// BenchmarkSourceLimiterSpoofed: the cost of one request from a new
// source into a full table (issue 13 measured 60 µs before eviction was
// O(1)).
func BenchmarkSourceLimiterSpoofed(b *testing.B) {
	t0 := time.Unix(1000, 0)
	l := sourceLimiter{rate: 100, burst: 200}
	i := 0
	for b.Loop() {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), t0)
		i++
	}
}
