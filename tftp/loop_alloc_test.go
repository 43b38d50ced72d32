package tftp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// TestLoopAckAllocs pins the single-port hot path: an ACK read by the
// event loop moves its lock-step transfer on, and the next block leaves
// through the loop's sendmmsg, without one allocation.
func TestLoopAckAllocs(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close() // never read: the kernel drops what it cannot queue
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := udpio.New(pc, udpio.Options{Pktinfo: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{SinglePort: true}
	if err := s.prepare(nil, nil); err != nil {
		t.Fatal(err)
	}
	l := newLoop(s, ln)
	peer := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	local := netip.MustParseAddr("127.0.0.1")
	sl, _, refusal := s.reserve(peer)
	if sl == nil {
		t.Fatal(refusal)
	}
	const runs = 2000
	data := memFile(make([]byte, (runs+10)*512))
	l.start(sl, &Request{Op: OpRRQ, Filename: "f", Mode: "octet"}, 20, data, peer, local) // DATA 1 goes out
	l.flush()
	ack := make([]byte, 4)
	block := uint16(0)
	step := func() {
		block++
		binary.BigEndian.PutUint16(ack, uint16(OpACK))
		binary.BigEndian.PutUint16(ack[2:], block)
		l.packet(ack, peer, local)
		l.flush()
	}
	step() // confirms the request: its slot moves to the confirmed ones
	if a := testing.AllocsPerRun(runs, step); a != 0 {
		t.Fatalf("%.2f allocations per ACK, want 0", a)
	}
	ls := l.sessions[peer]
	if ls == nil || ls.rs.w.acked != uint64(block) || s.Counters.DataSent.Load() != uint64(block)+1 {
		t.Fatalf("after %d ACKs: session %v, %d DATA sent", block, ls != nil, s.Counters.DataSent.Load())
	}
	if sys := s.Counters.SendSyscalls.Load(); sys != uint64(block)+1 {
		t.Errorf("%d send syscalls for %d blocks", sys, block+1)
	}
}
