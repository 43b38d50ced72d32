package tftp_test

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

// spoofedCopies is the most a request whose source never ACKs may buy:
// the first reply plus preAckRetries (4) retransmissions of it.
const spoofedCopies = 1 + 4

// TestSpoofedRequestBounded: an RRQ from an address that never ACKs (a
// spoofed source) gets one DATA block, or one OACK when options were
// asked, and nothing else but at most four retransmissions of that same
// packet; then the session is released.
func TestSpoofedRequestBounded(t *testing.T) {
	root := t.TempDir()
	writeRandom(t, filepath.Join(root, "big.img"), 1<<20, 31)
	srv := startServer(t, root, func(s *tftp.Server) {
		// Short timers so the pre-ACK retries run out quickly; Retries is
		// above the pre-ACK bound so that bound is what stops the session.
		s.InitialRTO, s.MinRTO, s.MaxRTO, s.Retries = 20*time.Millisecond, 10*time.Millisecond, 40*time.Millisecond, 10
	})
	dst, _ := net.ResolveUDPAddr("udp4", srv.Addr)
	for _, tc := range []struct {
		name string
		req  tftp.Request
		want tftp.Opcode
	}{
		{"no options", tftp.Request{Op: tftp.OpRRQ, Filename: "big.img", Mode: "octet"}, tftp.OpDATA},
		{"window 64", tftp.Request{Op: tftp.OpRRQ, Filename: "big.img", Mode: "octet",
			Options: []tftp.Option{{Name: "blksize", Value: "1468"}, {Name: "windowsize", Value: "64"}, {Name: "tsize", Value: "0"}}}, tftp.OpOACK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rrq := tc.req.Marshal(nil)
			c.WriteToUDP(rrq, dst)
			var got [][]byte
			buf := make([]byte, 70000)
			for len(got) < 100 {
				// The server gives up after 4 retries of at most 40 ms:
				// a second of silence means it stopped sending.
				c.SetReadDeadline(time.Now().Add(time.Second))
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				got = append(got, bytes.Clone(buf[:n]))
			}
			if len(got) == 0 || len(got) > spoofedCopies {
				t.Fatalf("%d packets to a source that never ACKed; want 1..%d", len(got), spoofedCopies)
			}
			bytesOut := 0
			for i, p := range got {
				bytesOut += len(p)
				if tftp.PacketOpcode(p) != tc.want || !bytes.Equal(p, got[0]) {
					t.Fatalf("packet %d is %v (%d bytes), want copies of one %v", i, tftp.PacketOpcode(p), len(p), tc.want)
				}
			}
			if tc.want == tftp.OpDATA {
				if blk, _, _ := tftp.ParseData(got[0]); blk != 1 || len(got[0]) != 4+512 {
					t.Fatalf("first reply is block %d of %d bytes, want block 1 of 516", blk, len(got[0]))
				}
			}
			t.Logf("%d-byte request bought %d packets, %d bytes (bound %d copies)", len(rrq), len(got), bytesOut, spoofedCopies)
		})
	}
	for i := 0; i < 100 && srv.Active() > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if srv.Active() != 0 {
		t.Fatalf("%d sessions still held by unanswered requests", srv.Active())
	}
}

// TestRequestRateLimit: past its burst, one client address gets no answer
// at all for requests over MaxRequestRate (counted, not answered), while
// another address is served as usual.
func TestRequestRateLimit(t *testing.T) {
	root := t.TempDir()
	writeRandom(t, filepath.Join(root, "f"), 100, 32)
	srv := startServer(t, root, func(s *tftp.Server) { s.MaxRequestRate, s.RequestBurst = 5, 5 })
	dst, _ := net.ResolveUDPAddr("udp4", srv.Addr)
	var sending time.Duration // how long the requests took to send: tokens refill meanwhile
	answered := func(src net.IP, n int) int {
		var socks []*net.UDPConn
		start := time.Now()
		rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: "missing", Mode: "octet"}).Marshal(nil)
		for range n {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src})
			if err != nil {
				t.Skipf("bind %v: %v", src, err)
			}
			defer c.Close()
			c.WriteToUDP(rrq, dst)
			socks = append(socks, c)
		}
		sending = time.Since(start)
		got := 0
		buf := make([]byte, 1024)
		deadline := time.Now().Add(2 * time.Second) // one wait for all of them
		for _, c := range socks {
			c.SetReadDeadline(deadline)
			if _, _, err := c.ReadFromUDP(buf); err == nil {
				got++
			}
		}
		return got
	}
	got := answered(net.IPv4(127, 0, 0, 1), 40)
	// Tokens: the burst plus what refilled while the requests went out
	// (measured), plus a second's worth for a server that reads its
	// socket late on a loaded machine: still a quarter of the requests.
	allowed := 5 + int(5*sending.Seconds()) + 5
	limited := srv.Counters.RateLimited.Load()
	// Every request was either refused by the limiter or answered "not
	// found" (server-side counts: no reply may be missed by a slow read).
	if n := limited + srv.Counters.NotFound.Load(); got > allowed || limited == 0 || n != 40 {
		t.Fatalf("40 requests from one address: %d answered (allowed %d), %d rate-limited", got, allowed, limited)
	}
	if other := answered(net.IPv4(127, 0, 0, 2), 3); other != 3 {
		t.Fatalf("another client address got %d answers of 3", other)
	}
}

// TestRefusalLogsLimited performs finding 15's attack: a flood of requests
// that are all refused. A request over a client's session limit and a
// request refused for its name (or for writes being off) used to log one
// line each, so a flood became a flood of log lines (13,111 in one run).
// Now each kind of refusal logs at most one line per 10 s with the number
// held back, and the counters still count every one.
func TestRefusalLogsLimited(t *testing.T) {
	root := t.TempDir()
	writeRandom(t, filepath.Join(root, "f"), 100_000, 33)
	var logs testutil.SyncBuffer
	srv := startServer(t, root, func(s *tftp.Server) {
		s.MaxPerClient = 1
		// Every refused request reaches its refusal: none is evicted
		// from the unconfirmed pool first.
		s.MaxUnconfirmed, s.MaxUnconfirmedPerPrefix = 1000, 1000
		s.Log = zerolog.New(&logs).Level(zerolog.InfoLevel)
	})
	// One transfer from 127.0.0.1 runs (its client has ACKed, then waits):
	// every other request from that address is over its limit.
	slow := testutil.StartSlowTFTP(t, srv.Addr, "f")
	slow.Next(t)
	dst, _ := net.ResolveUDPAddr("udp4", srv.Addr)
	// The refused names come from addresses of their own (one each: the
	// session limit is per address too).
	const flood = 250
	send := func(ip func(i int) net.IP, req tftp.Request) {
		for i := range flood {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip(i)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.WriteToUDP(req.Marshal(nil), dst)
		}
	}
	send(func(int) net.IP { return net.IPv4(127, 0, 0, 1) }, tftp.Request{Op: tftp.OpRRQ, Filename: "f", Mode: "octet"})
	send(func(i int) net.IP { return net.IPv4(127, 0, 1, byte(i+1)) }, tftp.Request{Op: tftp.OpRRQ, Filename: "../secret", Mode: "octet"})
	send(func(i int) net.IP { return net.IPv4(127, 0, 2, byte(i+1)) }, tftp.Request{Op: tftp.OpWRQ, Filename: "up.bin", Mode: "octet"})
	for i := 0; srv.Counters.SessionLimited.Load() < flood || srv.Counters.Denied.Load() < 2*flood; i++ {
		if i == 500 {
			t.Fatalf("refusals counted: session limit %d, denied %d; want %d and %d",
				srv.Counters.SessionLimited.Load(), srv.Counters.Denied.Load(), flood, 2*flood)
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow.Finish(t)
	lines := map[string]int{}
	for _, l := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(l, "session limit"):
			lines["session limit"]++
		case strings.Contains(l, `"outcome":"denied"`):
			lines["denied"]++
		case strings.Contains(l, `"outcome":"writes-disabled"`):
			lines["writes disabled"]++
		}
	}
	// One line per kind per 10 s: a few at most however slow the machine.
	for _, kind := range []string{"session limit", "denied", "writes disabled"} {
		if n := lines[kind]; n == 0 || n > 5 {
			t.Errorf("%d refusals (%s) logged %d lines, want 1..5", flood, kind, n)
		}
	}
	if !strings.Contains(logs.String(), `"suppressed"`) {
		t.Errorf("no log line says how many were held back:\n%.2000s", logs.String())
	}
}
