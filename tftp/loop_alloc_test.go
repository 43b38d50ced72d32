package tftp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/mtftpd/mtftpd/internal/filestore"
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
	ln := pktinfoListener(t)
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

// TestLoopBatchConfirmsBeforeAdmitting: with room for one unconfirmed
// request per /24, a read that holds a second client's request before
// the first client's ACK confirms the first transfer (the ACK is taken
// first) instead of evicting it; both transfers run.
func TestLoopBatchConfirmsBeforeAdmitting(t *testing.T) {
	var rxs [2]*net.UDPConn
	var peers [2]netip.AddrPort
	for i := range rxs {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close() // never read
		rxs[i], peers[i] = rx, rx.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	ln := pktinfoListener(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := &Server{Files: store, SinglePort: true, MaxUnconfirmed: 1, MaxUnconfirmedPerPrefix: 1}
	if err := s.prepare(nil, nil); err != nil {
		t.Fatal(err)
	}
	l := newLoop(s, ln)
	local := netip.MustParseAddr("127.0.0.1")
	rrq := append(binary.BigEndian.AppendUint16(nil, uint16(OpRRQ)), "f\x00octet\x00"...)
	l.batch([]udpio.Packet{{Data: rrq, Src: peers[0], Dst: local}}) // DATA 1 to the first client
	l.flush()
	ack := AppendAck(nil, 1)
	l.batch([]udpio.Packet{{Data: rrq, Src: peers[1], Dst: local}, {Data: ack, Src: peers[0], Dst: local}})
	l.flush()
	for i, p := range peers {
		if ls := l.sessions[p]; ls == nil || ls.ended {
			t.Errorf("client %d (%v): no running transfer (evicted %d)", i, p, s.Counters.Evicted.Load())
		}
	}
	if ls := l.sessions[peers[0]]; ls != nil && ls.rs.w.acked != 1 {
		t.Errorf("first client's transfer: %d blocks acknowledged, want 1", ls.rs.w.acked)
	}
}

// pktinfoListener is a loopback listening socket as the loop reads it
// (destination addresses reported), closed at the test's end.
func pktinfoListener(t *testing.T) *udpio.Conn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := udpio.New(pc, udpio.Options{Pktinfo: true})
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
