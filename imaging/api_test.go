package imaging

import (
	"testing"
	"time"
)

func TestSessionStats(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	s := Session{Start: t0, Size: 2_000_000}
	s.SessionStats(0, 0, 1000, t0.Add(10*time.Second))
	if s.ETASeconds != -1 || s.RateMBps != 0 {
		t.Fatalf("nothing sent: %+v", s)
	}
	// 1000 blocks of 1000 bytes in 10 s, 100 of them repairs: 0.1 MB/s,
	// half the file's size on the wire, 1.1 MB not sent once yet: 11 s.
	s.SessionStats(1000, 100, 1000, t0.Add(10*time.Second))
	if s.WireBytes != 1_000_000 || s.RateMBps != 0.1 || s.WireRatio != 0.5 || s.ETASeconds != 11 {
		t.Fatalf("got %+v", s)
	}
}
