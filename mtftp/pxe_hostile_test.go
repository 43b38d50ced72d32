package mtftp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/tftp"
)

// pxeFloodRequest is an RRQ of about size bytes with as many distinct,
// empty options as fit (issue 13, finding 4): the PXE listener reads 2048
// bytes of a datagram, so that is the most a request can hold there.
func pxeFloodRequest(size int) []byte {
	b := []byte("\x00\x01f\x00octet\x00")
	for i := 0; len(b) < size-8; i++ {
		b = fmt.Appendf(b, "o%d\x00\x00", i)
	}
	return b
}

// TestPXEOversizedRequest: the PXE MTFTP listener shares the TFTP request
// parser, so a request over 512 bytes is refused before it is read: a
// short ERROR (never larger than the request) and a small, fixed amount
// of work, where the unbounded parser read and compared every option.
func TestPXEOversizedRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(14)
		s := newTestServer(t, n, map[string][]byte{"f": testData(1000, 5)})
		s.PXEListen = pxeListen
		c := n.Listen(srvIP)
		defer c.Close()
		p := newPXEServer(s, c)
		cl := n.Listen("192.0.2.101")
		defer cl.Close()
		giant := pxeFloodRequest(2048)
		if a := testing.AllocsPerRun(5, func() { p.packet(giant, cl.Addr()) }); a > 40 {
			t.Fatalf("a %d-byte request took %.0f allocations, want <= 40", len(giant), a)
		}
		if len(p.passes) != 0 {
			t.Fatalf("%d passes started by oversized requests", len(p.passes))
		}
		buf := make([]byte, 4096)
		cl.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := cl.ReadFrom(buf)
		if err != nil || tftp.PacketOpcode(buf[:k]) != tftp.OpERROR || k > tftp.MaxRequestLen {
			t.Fatalf("reply: %d bytes, %v", k, err)
		}
	})
}

// TestPXERequestRateLimit performs finding 14's attack: one address sends
// 1,000 requests at once to the PXE MTFTP port. With the default limiter
// (100 a second, a burst of 200, as tftp.max_requests_per_sec and
// tftp.request_burst) at most the burst is answered; the rest get no
// answer at all and are counted; another address is still answered.
func TestPXERequestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(15)
		s, stop := newPXETestServer(t, n, nil)
		defer stop()
		server := netip.MustParseAddrPort(pxeListen)
		rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: "missing", Mode: "octet"}).Marshal(nil)
		flood := n.Listen("192.0.2.66")
		defer flood.Close()
		const sent = 1000
		for range sent {
			flood.WriteTo(rrq, server)
		}
		synctest.Wait()
		time.Sleep(10 * time.Millisecond) // 1 token of refill at most
		synctest.Wait()
		answered := int(s.Counters.PXERefused.Load()) // each answered request: ERROR file not found
		if answered > 2*DefaultPXERequestRate+1 {
			t.Fatalf("%d of %d requests from one address answered, want at most the burst of %d", answered, sent, 2*DefaultPXERequestRate)
		}
		if limited := s.Counters.RateLimited.Load(); int(limited)+answered != sent {
			t.Fatalf("%d answered + %d rate-limited != %d sent", answered, limited, sent)
		}
		other := n.Listen("192.0.2.67")
		defer other.Close()
		other.WriteTo(rrq, server)
		buf := make([]byte, 600)
		other.SetReadDeadline(time.Now().Add(time.Second))
		if k, _, err := other.ReadFrom(buf); err != nil || tftp.PacketOpcode(buf[:k]) != tftp.OpERROR {
			t.Fatalf("another address: %v, want its ERROR (not found)", err)
		}
		t.Logf("%d requests from one address: %d answered, %d dropped unanswered", sent, answered, s.Counters.RateLimited.Load())
	})
}

// TestPXERefusalLogsLimited: requests refused with a log line above debug
// (a file too big for MTFTP), sent by the hundred, log at most one line
// per 10 s with the number held back (finding 15); each still gets its
// ERROR and is counted.
func TestPXERefusalLogsLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(16)
		s := newTestServer(t, n, nil)
		var logs bytes.Buffer // written by the PXE goroutine only, read after it stopped
		s.Log = zerolog.New(&logs).Level(zerolog.InfoLevel)
		s.PXEListen = pxeListen
		s.RequestLimiter = tftp.NewSourceLimiter(0, 0) // every request reaches the refusal
		f, err := os.Create(filepath.Join(s.Files.Root(), "huge"))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(PXEMaxSize + 1) // sparse
		f.Close()
		c := n.Bind(netip.MustParseAddrPort(pxeListen))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- newPXEServer(s, c).run(ctx) }()
		cl := n.Listen("192.0.2.101")
		defer cl.Close()
		const flood = 300
		rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: "huge", Mode: "octet"}).Marshal(nil)
		for range flood {
			cl.WriteTo(rrq, netip.MustParseAddrPort(pxeListen))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := s.Counters.PXERefused.Load(); got != flood {
			t.Fatalf("%d refused, want %d", got, flood)
		}
		if k := strings.Count(logs.String(), "use TFTP"); k != 1 || !strings.Contains(logs.String(), `"suppressed"`) {
			t.Fatalf("%d refusals logged %d lines, want 1 with the number held back:\n%.2000s", flood, k, logs.String())
		}
	})
}
