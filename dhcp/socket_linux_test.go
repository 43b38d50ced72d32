package dhcp

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// Who writes the journal (readLoop): a reader whose batch drained its
// socket writes itself, after the OFFER it promised has left; a reader
// that read a full batch (recvmmsg on Linux: more was queued) hands the
// write to the commit goroutine and keeps reading. Nothing is lost while
// the reader's own write holds it.
func TestReaderWritesWhenIdle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := &Server{
		Addr:      netip.MustParseAddrPort("127.0.0.1:0"),
		LeaseFile: path,
		Subnets: []Subnet{{
			Prefix:     netip.MustParsePrefix("127.0.0.0/8"),
			RangeStart: netip.MustParseAddr("127.1.0.10"), RangeEnd: netip.MustParseAddr("127.1.1.250"),
		}},
		Relays: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Log:    zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
	if err := s.setup(); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		writers []string // "reader" or "committer", one per journal write
	)
	entered, gate := make(chan struct{}), make(chan struct{})
	var first, opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		buf := make([]byte, 1<<14)
		stack := string(buf[:runtime.Stack(buf, false)])
		who := "other: " + stack
		switch {
		case strings.Contains(stack, "(*Server).readLoop"):
			who = "reader"
		case strings.Contains(stack, "(*Server).commitLoop"):
			who = "committer"
		}
		mu.Lock()
		writers = append(writers, who)
		mu.Unlock()
		first.Do(func() {
			close(entered)
			<-gate // hold the first write until the backlog is queued
		})
		return real(f, off, data)
	}
	serve(t, s)
	t.Cleanup(open) // registered after serve's: runs first, so a failed test still stops
	srv := s.Addrs()[0]
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loop, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	asRelay := []dhcpv4.Modifier{relayed(loop), opt(optRelayAgent, []byte{19, 0})}
	discover := func(i int) {
		if _, err := c.WriteTo(build(t, dhcpv4.MessageTypeDiscover, mac(i), asRelay...).ToBytes(), srv); err != nil {
			t.Fatal(err)
		}
	}
	offers := map[string]bool{}
	readOffers := func(n int) {
		t.Helper()
		buf := make([]byte, 1500)
		for range n {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := c.ReadFrom(buf)
			if err != nil {
				t.Fatalf("%d OFFERs of %d: %v", len(offers), n, err)
			}
			r, err := dhcpv4.FromBytes(buf[:m])
			if err != nil || r.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("reply %v, %v; want an OFFER", r, err)
			}
			offers[r.ClientHWAddr.String()] = true
		}
	}

	// A lone DISCOVER: its OFFER arrives while the promise's write is
	// held, so it left first; the write is the reader's own.
	discover(1)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the OFFER's promise was never written")
	}
	readOffers(1)
	// The reader is inside that write: a full batch queues on its socket
	// (loopback delivers within the send).
	const backlog = readBatch
	for i := range backlog {
		discover(2 + i)
	}
	open()
	readOffers(backlog)
	if len(offers) != 1+backlog {
		t.Fatalf("%d distinct clients offered, want %d", len(offers), 1+backlog)
	}
	// Every promise made is written by the loops (the test does not
	// write itself: that would be neither).
	s.mu.Lock()
	seq := s.leases.seq
	s.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); !s.store.covers(seq); {
		if time.Now().After(deadline) {
			t.Fatalf("change %d never written", seq)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(writers) == 0 || writers[0] != "reader" {
		t.Fatalf("writers %q: the lone DISCOVER's promise should be written by the reader", writers)
	}
	// The batch read after the held write is a full one: its promises go
	// to the commit goroutine, so the reader reads on.
	committer := false
	for _, w := range writers {
		if strings.HasPrefix(w, "other") {
			t.Fatalf("a journal write from neither loop:\n%s", w)
		}
		committer = committer || w == "committer"
	}
	if !committer {
		t.Errorf("writers %q: a full batch's promises should be written by the commit goroutine", writers)
	}
}

// On a slow disk (the last append's sync took longer than readerSyncMax)
// the reader stops writing itself: the writes go back to the commit
// goroutine, and the reader keeps answering during them.
func TestReaderLeavesSlowSyncs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := &Server{
		Addr:      netip.MustParseAddrPort("127.0.0.1:0"),
		LeaseFile: path,
		Subnets: []Subnet{{
			Prefix:     netip.MustParsePrefix("127.0.0.0/8"),
			RangeStart: netip.MustParseAddr("127.1.0.10"), RangeEnd: netip.MustParseAddr("127.1.0.250"),
		}},
		Relays: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Log:    zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
	if err := s.setup(); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		writers []string
	)
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		buf := make([]byte, 1<<14)
		stack := string(buf[:runtime.Stack(buf, false)])
		mu.Lock()
		writers = append(writers, map[bool]string{true: "reader", false: "committer"}[strings.Contains(stack, "(*Server).readLoop")])
		mu.Unlock()
		time.Sleep(2 * readerSyncMax) // a disk slower than readerSyncMax
		return real(f, off, data)
	}
	serve(t, s)
	srv := s.Addrs()[0]
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loop, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	asRelay := []dhcpv4.Modifier{relayed(loop), opt(optRelayAgent, []byte{19, 0})}
	written := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			got := len(writers)
			mu.Unlock()
			if got >= n && s.store.covers(func() uint64 { s.mu.Lock(); defer s.mu.Unlock(); return s.leases.seq }()) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d journal writes, want %d", got, n)
			}
		}
	}
	// Lone DISCOVERs, one at a time, each offered with a promise to write.
	for i := 1; i <= 3; i++ {
		o := exchange(t, c, srv, build(t, dhcpv4.MessageTypeDiscover, mac(i), asRelay...))
		if o.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("reply %v", o.MessageType())
		}
		written(i)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"reader", "committer", "committer"}; strings.Join(writers, " ") != strings.Join(want, " ") {
		t.Errorf("writers %q, want %q: the first write (no sync timed yet) is the reader's, then the slow syncs keep the writes off it", writers, want)
	}
}
