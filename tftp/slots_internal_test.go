package tftp

import (
	"context"
	"net/netip"
	"testing"
)

// TestAnsweredNotEvicted (flood lab finding 1): when the unconfirmed pool
// of a /24 is full, its oldest request is evicted — unless its client has
// answered already (the ACK waits unread in the session's socket): that
// one is confirmed, and the transfer goes on.
func TestAnsweredNotEvicted(t *testing.T) {
	s := &Server{MaxUnconfirmedPerPrefix: 2, MaxUnconfirmed: 100}
	s.perClient = map[netip.Addr]int{}
	s.peers = map[netip.AddrPort]*slot{}
	s.sessCtx, s.stopAll = context.WithCancel(context.Background())
	defer s.stopAll()
	honest, _, _ := s.reserve(netip.MustParseAddrPort("192.0.2.10:1000"))
	s.setAnswered(honest, func() bool { return true })
	silent, _, _ := s.reserve(netip.MustParseAddrPort("192.0.2.11:1000"))
	s.setAnswered(silent, func() bool { return false })
	for i := range 3 {
		s.reserve(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.12"), uint16(2000+i)))
	}
	if honest.state != slotConfirmed {
		t.Fatalf("the answered request is in state %d, want confirmed", honest.state)
	}
	if silent.state != slotEvicted {
		t.Fatalf("the silent request is in state %d, want evicted", silent.state)
	}
	if err := s.confirm(honest); err != nil {
		t.Fatalf("the session's own confirm after: %v", err)
	}
}
