package tftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
)

// giantRequest is the parser attack of issue 13 (finding 4): an RRQ of
// about size bytes carrying as many distinct, empty options as fit.
func giantRequest(size int) ([]byte, int) {
	b := []byte("\x00\x01f\x00octet\x00")
	n := 0
	for len(b) < size-8 {
		b = fmt.Appendf(b, "o%d\x00\x00", n)
		n++
	}
	return b, n
}

// TestParseRequestBounded: a request over RFC 2347's 512 octets is refused
// before any option is read, and one within it yields at most MaxOptions
// options, duplicates detected without comparing each option with every
// earlier one. Allocations count the work: the unbounded parser made two
// strings per option (23,000 for the 65 KB request) and compared each
// new option with all the earlier ones.
func TestParseRequestBounded(t *testing.T) {
	giant, opts := giantRequest(65000)
	if _, err := ParseRequest(giant); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d-byte request with %d options: err %v, want ErrMalformed (over 512 bytes)", len(giant), opts, err)
	}
	if a := testing.AllocsPerRun(10, func() { ParseRequest(giant) }); a > 20 {
		t.Fatalf("refusing a %d-byte request took %.0f allocations, want <= 20 (refused before parsing)", len(giant), a)
	}
	full, opts := giantRequest(MaxRequestLen)
	r, err := ParseRequest(full)
	if err != nil {
		t.Fatalf("%d-byte request: %v", len(full), err)
	}
	if len(r.Options) > MaxOptions {
		t.Fatalf("%d-byte request with %d options kept %d, want <= %d", len(full), opts, len(r.Options), MaxOptions)
	}
	// Each kept option costs its name and value; a bound on allocations
	// is a bound on the work, whatever the request holds.
	if a := testing.AllocsPerRun(10, func() { ParseRequest(full) }); a > 3*MaxOptions {
		t.Fatalf("a 512-byte request with %d options took %.0f allocations, want <= %d", opts, a, 3*MaxOptions)
	}
}

// TestOversizedRequestBounded performs the attack on the listener: a 65 KB
// RRQ with about 11,500 distinct empty options is handled (refused with a
// short ERROR, counted as a bad request) with a small, fixed amount of
// work, where the unbounded parser spent about 0.5 s of the listener loop
// on each one.
func TestOversizedRequestBounded(t *testing.T) {
	store, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := &Server{Files: store, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	defer func() { cancel(); <-done }()
	for i := 0; ; i++ { // Serve sets up the listener in its own goroutine
		s.mu.Lock()
		up := s.ln != nil
		s.mu.Unlock()
		if up {
			break
		}
		if i == 1000 {
			t.Fatal("server did not start")
		}
		time.Sleep(time.Millisecond)
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	from := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	giant, opts := giantRequest(65000)
	dst := netip.MustParseAddr("127.0.0.1")
	if a := testing.AllocsPerRun(5, func() { s.handle(giant, from, dst) }); a > 20 {
		t.Fatalf("handling a %d-byte RRQ with %d options took %.0f allocations, want <= 20", len(giant), opts, a)
	}
	if n := s.Counters.BadRequest.Load(); n != 6 {
		t.Fatalf("%d bad requests counted for 6 oversized ones", n)
	}
	buf := make([]byte, 2048)
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, _, err := rx.ReadFromUDP(buf)
	if err != nil || PacketOpcode(buf[:k]) != OpERROR || k > MaxRequestLen {
		t.Fatalf("reply to the oversized request: %d bytes, opcode %v, %v; want a short ERROR", k, PacketOpcode(buf[:k]), err)
	}
}
