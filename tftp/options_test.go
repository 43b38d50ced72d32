package tftp

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestNegotiate(t *testing.T) {
	lim := Limits{MaxBlockSize: 1468, MaxWindow: 64, MaxWindowBytes: 4 << 20}
	cases := []struct {
		name string
		opts []Option
		lim  Limits
		size int64
		want Negotiated
	}{
		{"none", nil, lim, 10, Negotiated{BlockSize: 512, WindowSize: 1, TSize: -1}},
		{"pxelinux", []Option{{"tsize", "0"}, {"blksize", "1408"}}, lim, 42,
			Negotiated{BlockSize: 1408, WindowSize: 1, TSize: -1, TSizeAsked: true, Ack: []Option{{"tsize", "42"}, {"blksize", "1408"}}}},
		{"blksize lowered to cap", []Option{{"blksize", "65464"}}, lim, 1,
			Negotiated{BlockSize: 1468, WindowSize: 1, TSize: -1, Ack: []Option{{"blksize", "1468"}}}},
		{"bad values omitted", []Option{{"blksize", "7"}, {"timeout", "0"}, {"windowsize", "0"}, {"tsize", "-1"}, {"rollover", "2"}, {"x", "y"}}, lim, 1,
			Negotiated{BlockSize: 512, WindowSize: 1, TSize: -1}},
		{"timeout echoed exactly", []Option{{"TIMEOUT", "6"}}, lim, 1,
			Negotiated{BlockSize: 512, WindowSize: 1, TSize: -1, Timeout: 6 * time.Second, Ack: []Option{{"TIMEOUT", "6"}}}},
		{"window capped", []Option{{"windowsize", "1000"}}, lim, 1,
			Negotiated{BlockSize: 512, WindowSize: 64, TSize: -1, Ack: []Option{{"windowsize", "64"}}}},
		{"window bytes cap", []Option{{"blksize", "65464"}, {"windowsize", "64"}}, Limits{MaxWindow: 64, MaxWindowBytes: 1 << 20}, 1,
			Negotiated{BlockSize: 65464, WindowSize: 16, TSize: -1, Ack: []Option{{"blksize", "65464"}, {"windowsize", "16"}}}},
		{"netascii refuses window", []Option{{"windowsize", "8"}, {"tsize", "0"}}, Limits{Netascii: true}, 77,
			Negotiated{BlockSize: 512, WindowSize: 1, TSize: -1, TSizeAsked: true, Ack: []Option{{"tsize", "77"}}}},
		{"rollover 1", []Option{{"rollover", "1"}}, lim, 1,
			Negotiated{BlockSize: 512, WindowSize: 1, TSize: -1, Rollover: 1, Ack: []Option{{"rollover", "1"}}}},
	}
	for _, c := range cases {
		got := Negotiate(&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: c.opts}, c.lim, c.size)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
	w := Negotiate(&Request{Op: OpWRQ, Filename: "f", Mode: "octet", Options: []Option{{"tsize", "999"}}}, lim, -1)
	if w.TSize != 999 || len(w.Ack) != 1 || w.Ack[0].Value != "999" {
		t.Fatalf("WRQ tsize: %+v", w)
	}
}

func TestWireBlock(t *testing.T) {
	cases := []struct {
		n    uint64
		ro   uint16
		wire uint16
	}{
		{0, 0, 0}, {1, 0, 1}, {65535, 0, 65535}, {65536, 0, 0}, {65537, 0, 1},
		{65535, 1, 65535}, {65536, 1, 1}, {65537, 1, 2}, {131070, 1, 65535}, {131071, 1, 1},
	}
	for _, c := range cases {
		if w := wireBlock(c.n, c.ro); w != c.wire {
			t.Errorf("wireBlock(%d, %d) = %d, want %d", c.n, c.ro, w, c.wire)
		}
	}
}

// FuzzUnwrapBlock: for any window [lo, hi] of at most 65535 blocks and any
// block n in it, unwrapping n's wire number gives n back.
func FuzzUnwrapBlock(f *testing.F) {
	f.Add(uint64(65530), uint16(20), uint16(7), false)
	f.Add(uint64(0), uint16(3), uint16(0), true)
	f.Fuzz(func(t *testing.T, lo uint64, span uint16, off uint16, ro bool) {
		lo %= 1 << 40
		hi := lo + uint64(span%65535)
		n := lo + uint64(off)%(hi-lo+1)
		var r uint16
		if ro {
			r = 1
		}
		got, ok := unwrapBlock(wireBlock(n, r), lo, hi, r)
		if !ok || got != n {
			t.Fatalf("unwrap(wire(%d)) in [%d,%d] ro=%d = %d,%v", n, lo, hi, r, got, ok)
		}
	})
}

func TestWindow(t *testing.T) {
	w := window{size: 4, final: 10}
	if f, to := w.next(); f != 1 || to != 4 {
		t.Fatalf("first window %d..%d", f, to)
	}
	steps := []struct {
		ack  uint64
		want ackVerdict
	}{{0, ackStale}, {5, ackStale}, {2, ackGap}, {2, ackStale}, {1, ackStale}}
	for _, s := range steps {
		if v := w.onAck(s.ack); v != s.want {
			t.Fatalf("ack %d: verdict %d, want %d", s.ack, v, s.want)
		}
	}
	if f, to := w.next(); f != 3 || to != 6 {
		t.Fatalf("after gap ack 2: %d..%d", f, to)
	}
	if v := w.onAck(6); v != ackWindow {
		t.Fatal("full window")
	}
	if f, to := w.next(); f != 7 || to != 10 {
		t.Fatalf("last window %d..%d", f, to)
	}
	if v := w.onAck(10); v != ackDone {
		t.Fatal("final")
	}
}

// TestMTUClamp: blksize is capped at the receiving interface's MTU − 32
// unless fragments are allowed.
func TestMTUClamp(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	s := &Server{}
	s.mtus.byAddr = map[netip.Addr]int{a: 1500}
	s.mtus.at = time.Now()
	if got := s.limits(a).MaxBlockSize; got != 1468 {
		t.Fatalf("MTU 1500: max blksize %d, want 1468", got)
	}
	s.AllowFragments = true
	if got := s.limits(a).MaxBlockSize; got != MaxBlockSize {
		t.Fatalf("fragments allowed: max blksize %d, want %d", got, MaxBlockSize)
	}
	s.AllowFragments, s.MaxBlockSize = false, 1024
	if got := s.limits(a).MaxBlockSize; got != 1024 {
		t.Fatalf("configured cap: %d", got)
	}
}
