package testutil

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// SlowTFTP reads a file from a TFTP server in lock-step 512-byte blocks
// (no options) and ACKs only when told: it holds a transfer open for as
// long as a test needs, without assuming anything about timing. Built on
// raw packets, so tests of the server do not depend on its own client.
type SlowTFTP struct {
	c      *net.UDPConn
	server *net.UDPAddr // the transfer's TID once DATA 1 arrived
	block  uint16       // the block held, not yet ACKed
	last   bool         // block is the final one (shorter than 512)
	Bytes  int          // bytes received so far
}

// slowWait bounds each wait for a DATA packet; the server retransmits
// within its RTO (1 s before the first round trip), so this is generous.
const slowWait = 10 * time.Second

// StartSlowTFTP sends a read request for file to addr ("127.0.0.1:69")
// and waits for DATA 1, which it holds un-ACKed. The socket is closed at
// the end of the test.
func StartSlowTFTP(t testing.TB, addr, file string) *SlowTFTP {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ua.IP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rrq := append([]byte{0, 1}, file...)
	rrq = append(append(rrq, 0), "octet\x00"...)
	if _, err := c.WriteToUDP(rrq, ua); err != nil {
		t.Fatal(err)
	}
	s := &SlowTFTP{c: c}
	s.read(t, 1)
	return s
}

// read waits for DATA n, skipping retransmitted earlier blocks.
func (s *SlowTFTP) read(t testing.TB, n uint16) {
	t.Helper()
	buf := make([]byte, 600)
	s.c.SetReadDeadline(time.Now().Add(slowWait))
	for {
		k, from, err := s.c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("slow TFTP client: waiting for DATA %d: %v", n, err)
		}
		op := binary.BigEndian.Uint16(buf)
		if op == 5 {
			t.Fatalf("slow TFTP client: server sent ERROR %q", buf[4:k])
		}
		if k < 4 || op != 3 || binary.BigEndian.Uint16(buf[2:]) != n {
			continue
		}
		s.server, s.block, s.last = from, n, k-4 < 512
		s.Bytes += k - 4
		return
	}
}

// Next ACKs the held block and waits for the next one. It reports false,
// having ACKed the final block, when there is none.
func (s *SlowTFTP) Next(t testing.TB) bool {
	t.Helper()
	ack := []byte{0, 4, byte(s.block >> 8), byte(s.block)}
	if _, err := s.c.WriteToUDP(ack, s.server); err != nil {
		t.Fatal(err)
	}
	if s.last {
		return false
	}
	s.read(t, s.block+1)
	return true
}

// Finish reads the rest of the file at full speed (for files under
// 65535 blocks: no rollover).
func (s *SlowTFTP) Finish(t testing.TB) {
	t.Helper()
	for s.Next(t) {
	}
}
