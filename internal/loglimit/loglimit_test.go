package loglimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	if ok, n := l.Allow("a", t0); !ok || n != 0 {
		t.Fatalf("first line: %v %d", ok, n)
	}
	for i := range 1000 {
		if ok, _ := l.Allow("a", t0.Add(time.Duration(i)*time.Millisecond)); ok {
			t.Fatalf("line %d within 10 s let through", i)
		}
	}
	if ok, _ := l.Allow("b", t0); !ok {
		t.Fatal("another kind held back")
	}
	if ok, n := l.Allow("a", t0.Add(DefaultEvery)); !ok || n != 1000 {
		t.Fatalf("after 10 s: %v, %d held back; want true, 1000", ok, n)
	}
	if ok, _ := l.Allow("a", t0); !ok {
		t.Fatal("a clock that went backwards must not silence a kind")
	}
	fast := Limiter{Every: time.Second}
	fast.Allow("a", t0)
	if ok, _ := fast.Allow("a", t0.Add(time.Second)); !ok {
		t.Fatal("Every not honoured")
	}
}
