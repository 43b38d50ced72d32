package mtftp

import (
	"net"
	"net/netip"
	"testing"
)

// TestReceiverRefusesGeometry (review of issue 12): a session answer
// with tiny shards or odd stripes — which would make the receiver keep
// state for every few bytes of the file — is refused.
func TestReceiverRefusesGeometry(t *testing.T) {
	r := &NativeReceiver{BlockSize: 1468}
	good := sessionPkt{ShardSize: 1468 - nativeBlkAdjust, K: 64, M: 64, Interleave: 64}
	if err := r.checkGeometry(good); err != nil {
		t.Fatalf("the server's own geometry refused: %v", err)
	}
	for _, p := range []sessionPkt{{ShardSize: 8, K: 1, M: 1}, {ShardSize: 1456, K: 1, M: 64}, {ShardSize: 500, K: 64, M: 64}, {ShardSize: 8960, K: 64, M: 64}} {
		if r.checkGeometry(p) == nil {
			t.Errorf("geometry %d/%d+%d taken", p.ShardSize, p.K, p.M)
		}
	}
}

// fakePartial is a partial download's state over g wanting all of it,
// with a control socket to nowhere.
func fakePartial(t *testing.T, g geometry) *recvState {
	t.Helper()
	rc := fakeReceiver(t, g)
	rc.data = nil
	rc.partial = true
	rc.ranges = []Range{{0, g.size}}
	rc.deliver = func(int64, []byte) error { return nil }
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	rc.ctl = uc
	rc.srv = netip.MustParseAddrPort("127.0.0.1:9")
	if err := rc.setupPartial(); err != nil {
		t.Fatal(err)
	}
	return rc
}

// TestPartialParityWithinBudget (review of issue 12): REPAIR shards —
// forged on the group, or many stripes left incomplete by loss — never
// take a partial download past its budget; a stripe that holds K shards
// but could not be rebuilt still asks for one more.
func TestPartialParityWithinBudget(t *testing.T) {
	g, _ := newGeometry(1460*64*3000, 1460, 64, 64) // 3000 stripes, 280 MB: far more than the budget
	rc := fakePartial(t, g)
	payload := make([]byte, g.shard)
	for st := range g.stripes {
		for j := range g.m - 1 { // 63 parity shards: never enough to rebuild
			rc.store(st, g.k+j, payload)
		}
		if rc.bufBytes > partialBudget {
			t.Fatalf("stripe %d: %d bytes held, budget %d", st, rc.bufBytes, partialBudget)
		}
	}
	held := 0
	for st := range g.stripes {
		if rc.parity[st] != nil {
			held++
		}
	}
	if held == 0 || int64(held) == g.stripes {
		t.Fatalf("parity held for %d of %d stripes: the budget did not bind", held, g.stripes)
	}
	// A stripe with K shards counted and no rebuild NAKs at least one.
	rc.count[5], rc.curSeq = uint16(g.k), 1<<40
	for first := int64(0); first < g.stripes; first += maxWantBits {
		rc.segFrom[uint32(first)] = 0
	}
	rc.round = 10
	rc.sendStatus(nil, rc.lastStatus)
	if rc.nakRound[5] != rc.round {
		t.Fatal("a stripe holding K shards, not rebuilt, was never asked for again")
	}
}

// TestWantAckChecked (review of issue 12): a WANTACK for a segment the
// receiver did not send, or with a position far beyond the stream, is
// not taken.
func TestWantAckChecked(t *testing.T) {
	g, _ := newGeometry(1460*64*20000, 1460, 64, 64) // 20000 stripes: segments 0, 8192, 16384
	rc := fakePartial(t, g)
	rc.curSeq = 100
	for _, p := range []wantAckPkt{
		{First: 5, Count: 8192},                   // not aligned
		{First: 0, Count: 100},                    // not our length
		{First: 8192, Count: 8192, From: 1 << 50}, // far beyond the stream
		{First: 24576, Count: 8192},               // past the file
		{First: 16384, Count: 20000 - 16384 + 1},  // the last segment's length is 3616
	} {
		rc.wantAcked(appendWantAck(nil, &p))
	}
	if len(rc.segFrom) != 0 {
		t.Fatalf("forged WANTACKs taken: %v", rc.segFrom)
	}
	ok := wantAckPkt{First: 16384, Count: 20000 - 16384, From: 150}
	rc.wantAcked(appendWantAck(nil, &ok))
	again := wantAckPkt{First: 16384, Count: 20000 - 16384, From: 900}
	rc.wantAcked(appendWantAck(nil, &again))
	if len(rc.segFrom) != 1 || rc.segFrom[16384] != 150 {
		t.Fatalf("segFrom %v, want the first answer for 16384 only", rc.segFrom)
	}
}
