package tftp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// TestWindowSendAllocs pins the hot path: building a 64-block window from
// the mapping and sending it through udpio allocates nothing.
func TestWindowSendAllocs(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	c, err := dialTransfer(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 64*1468*4)
	const win = 64
	s := &readSession{
		c: c, peer: rx.LocalAddr().(*net.UDPAddr).AddrPort(),
		src: &mappedSource{data: data, blksize: 1468}, size: int64(len(data)),
		neg:      Negotiated{BlockSize: 1468, WindowSize: win},
		counters: &Counters{},
		hdrs:     make([]byte, HeaderLen*win),
		dgs:      make([]udpio.Datagram, win),
	}
	var res result
	send := func() {
		if err := s.sendBlocks(1, win, &res); err != nil {
			t.Fatal(err)
		}
	}
	send() // warm up pools
	if a := testing.AllocsPerRun(50, send); a != 0 {
		t.Fatalf("%.1f allocations per window, want 0", a)
	}
	if res.Syscalls > res.Datagrams/16 {
		t.Fatalf("%d syscalls for %d datagrams", res.Syscalls, res.Datagrams)
	}
}

// BenchmarkWindowSend measures the cost of one 64 × 1468-byte window on
// loopback, the send side alone (the receiver drops what it cannot take).
func BenchmarkWindowSend(b *testing.B) {
	rx, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer rx.Close()
	c, err := dialTransfer(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 64*1468)
	s := &readSession{c: c, peer: rx.LocalAddr().(*net.UDPAddr).AddrPort(),
		src: &mappedSource{data: data, blksize: 1468}, size: int64(len(data)),
		neg: Negotiated{BlockSize: 1468, WindowSize: 64}, counters: &Counters{},
		hdrs: make([]byte, HeaderLen*64), dgs: make([]udpio.Datagram, 64)}
	var res result
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s.sendBlocks(1, 64, &res)
	}
	b.ReportMetric(float64(res.Datagrams)/float64(res.Syscalls), "datagrams/syscall")
}

// BenchmarkDialTransfer is what a new TID costs (socket, bind, buffer
// setup, close): the price a single-port mode would save per transfer.
func BenchmarkDialTransfer(b *testing.B) {
	local := netip.MustParseAddr("127.0.0.1")
	for b.Loop() {
		c, err := dialTransfer(local)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
