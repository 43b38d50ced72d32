package tftp_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// floodUnconfirmed sends an RRQ for file from perAddr sockets on each of
// the addresses 127.0.<third>.1..addrs, and keeps the sockets open and
// silent until the test ends: requests that are never answered, as from
// spoofed sources (a closed port would answer the server's DATA with an
// ICMP error and end its session early).
func floodUnconfirmed(t *testing.T, srvAddr string, third byte, addrs, perAddr int, file string) {
	t.Helper()
	dst, _ := net.ResolveUDPAddr("udp4", srvAddr)
	rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: file, Mode: "octet"}).Marshal(nil)
	for a := range addrs {
		for range perAddr {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, third, byte(a+1))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.WriteToUDP(rrq, dst)
		}
	}
}

// TestSlotExhaustionFlood performs finding 5's attack: 1,024 RRQs from 64
// addresses, never answered. They used to take every session slot
// (max_sessions 1024, 16 per address) for 23 s, and real clients got
// "server busy". Requests not yet confirmed by the client's first ACK now
// live in a pool of their own, at most MaxUnconfirmedPerPrefix per /24,
// the oldest evicted to make room: a real client is served during the
// flood, from another /24 while a second wave arrives, and from the
// flooders' own /24 after it.
func TestSlotExhaustionFlood(t *testing.T) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "f"), 100_000, 34)
	srv := startServer(t, root, nil)
	const addrs, perAddr = 64, 16
	// The flood's requests the server has taken: each is still waiting
	// for its client or was evicted (the code before the pool: each
	// became a transfer).
	reached := func() uint64 {
		return max(srv.Counters.RRQ.Load(), srv.Counters.Evicted.Load()+uint64(srv.Counters.Pending.Load()))
	}
	wait := func(n uint64) {
		for i := 0; reached() < n; i++ {
			if i == 1000 {
				t.Fatalf("%d of %d flood requests reached the server", reached(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	get := func(ip net.IP) {
		t.Helper()
		var got bytes.Buffer
		c := &tftp.Client{BlockSize: 1468, LocalAddr: netipFrom(ip)}
		if _, err := c.Get(context.Background(), srv.Addr, "f", &got); err != nil || !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("real client %v during the flood: %v (%d bytes); %d transfers held", ip, err, got.Len(), srv.Active())
		}
	}
	// held: unconfirmed requests in the pool; running: every session,
	// with those evicted but still winding down.
	var held, running int64
	sample := func() {
		held, running = max(held, srv.Counters.Pending.Load()), max(running, int64(srv.Active()))
	}
	floodUnconfirmed(t, srv.Addr, 1, addrs, perAddr, "f")
	wait(addrs * perAddr)
	sample()
	// A second wave while a client from another /24 downloads.
	done := make(chan struct{})
	go func() { defer close(done); floodUnconfirmed(t, srv.Addr, 1, addrs, perAddr, "f") }()
	get(net.IPv4(127, 0, 0, 1))
	<-done
	wait(2 * addrs * perAddr)
	sample()
	// A client in the flooders' own /24, their requests still unanswered.
	get(net.IPv4(127, 0, 1, 200))
	// Evicted sessions still running are a moment from their end; their
	// number is capped all the same.
	if bound := int64(tftp.DefaultMaxSessions + tftp.DefaultMaxUnconfirmed); held > tftp.DefaultMaxUnconfirmedPerPrefix || running > bound {
		t.Fatalf("%d unanswered requests from one /24: %d held, %d sessions running; want at most %d and %d",
			2*addrs*perAddr, held, running, tftp.DefaultMaxUnconfirmedPerPrefix, bound)
	}
	if ev := srv.Counters.Evicted.Load(); ev < 2*addrs*perAddr-tftp.DefaultMaxUnconfirmedPerPrefix {
		t.Fatalf("%d unanswered requests evicted of %d", ev, 2*addrs*perAddr)
	}
	t.Logf("%d unanswered requests from %d addresses: at most %d held at once (%d sessions running), %d evicted; both real clients served",
		2*addrs*perAddr, addrs, held, running, srv.Counters.Evicted.Load())
}

func netipFrom(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}
