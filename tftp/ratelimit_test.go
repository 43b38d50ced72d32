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
		if len(l.buckets) > 8 {
			t.Fatalf("%d buckets after %d sources, cap 8", len(l.buckets), i+1)
		}
	}
	off := sourceLimiter{}
	for range 100 {
		if !off.allow(a, t0) {
			t.Fatal("rate 0 must not limit")
		}
	}
}
