package tftp

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// TestLoopBlindAmplification: in single-port mode the server's port is
// 69, so a spoofer who never sees a reply can still send the ACKs a
// transfer expects (ACK 0 after the OACK, then the last block of each
// window). It forges an RRQ from a victim's address and follows it with
// blind ACKs: when the transfer would move more than one frame per ACK
// (a window; a 64 KiB block with allow_fragments), no DATA may reach the
// victim: such a transfer keeps a port of its own, which only the real
// client learns. Before, 203 forged bytes (an RRQ, 41 ACKs) bought 4.8
// MB of DATA for the victim with a window of 64, and 190 bytes 3.3 MB
// with 64 KiB blocks.
func TestLoopBlindAmplification(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "big"), testData(4<<20, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, tc := range []struct {
		name      string
		opts      []Option
		fragments bool
		ackStep   uint16 // blocks per window
	}{
		{"window 64", []Option{{Name: "blksize", Value: "1468"}, {Name: "windowsize", Value: "64"}}, false, 64},
		{"blksize 65464 with allow_fragments", []Option{{Name: "blksize", Value: "65464"}}, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(1)
				victim := netip.MustParseAddrPort("198.51.100.7:2070")
				n.Bind(victim) // a host that never answers
				var dataBytes, spoofed atomic.Int64
				n.Drop = func(from, to netip.AddrPort, pkt []byte) bool {
					if to == victim && PacketOpcode(pkt) == OpDATA {
						dataBytes.Add(int64(len(pkt)))
					}
					return false
				}
				srv := &Server{Files: store, SinglePort: true, AllowFragments: tc.fragments,
					Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}
				addr, stop := startLoop(t, n, srv)
				spoof := func(b []byte) {
					spoofed.Add(int64(len(b)))
					n.Spoof(victim, addr, b)
					time.Sleep(5 * time.Millisecond)
				}
				spoof((&Request{Op: OpRRQ, Filename: "big", Mode: "octet", Options: tc.opts}).Marshal(nil))
				for w := range uint16(41) {
					spoof(AppendAck(nil, w*tc.ackStep))
				}
				time.Sleep(time.Minute) // every retry of what was sent
				if got := dataBytes.Load(); got > 0 {
					t.Errorf("%d spoofed bytes made the server send %d bytes of DATA to a host that never asked", spoofed.Load(), got)
				}
				if err := stop(); err != nil {
					t.Errorf("Serve: %v", err)
				}
			})
		})
	}
}

// broadcastConn is a loop's socket whose requests all came to the
// limited broadcast address: a reply from there is refused by the
// kernel (EINVAL, as Linux's sendmsg does for an IP_PKTINFO source of
// 255.255.255.255).
type broadcastConn struct{ memLoopConn }

var limitedBroadcast = netip.MustParseAddr("255.255.255.255")

func (c broadcastConn) ReadBatch(bufs [][]byte, out []udpio.Packet) (int, error) {
	n, err := c.memLoopConn.ReadBatch(bufs, out)
	for i := range out[:n] {
		out[i].Dst = limitedBroadcast
	}
	return n, err
}

func (c broadcastConn) WriteMessages(ms []udpio.Message) (int, int, error) {
	for i, m := range ms {
		if m.Src == limitedBroadcast {
			c.memLoopConn.WriteMessages(ms[:i])
			return i, 1, syscall.EINVAL
		}
	}
	return c.memLoopConn.WriteMessages(ms)
}

// countWriter counts the log lines that contain a string.
type countWriter struct {
	sub string
	n   atomic.Int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.sub)) {
		w.n.Add(1)
	}
	return len(p), nil
}

// TestLoopFailedSendLogsLimited: RRQs broadcast to port 69 from 300
// (spoofed) sources, each within the per-source rate, in single-port
// mode: the first reply of each fails to leave (its source would be the
// broadcast address), and its transfer fails. Those transfers never
// heard their client — a flood's — so they log through the limiter like
// the unanswered ones; before, each logged a warning of its own.
func TestLoopFailedSendLogsLimited(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), testData(10_000, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		logs := &countWriter{sub: `"message":"transfer"`}
		srv := &Server{Files: store, SinglePort: true, Log: zerolog.New(logs).Level(zerolog.InfoLevel)}
		addr := netip.MustParseAddrPort("192.0.2.1:69")
		ln := n.Bind(addr)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.runLoops(ctx, nil, []loopConn{broadcastConn{memLoopConn{ln}}}) }()
		const floods = 300
		rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).Marshal(nil)
		for i := range floods {
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 2000)
			n.Spoof(from, addr, rrq)
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Minute)
		if f := srv.Counters.Failed.Load(); f != floods {
			t.Errorf("%d transfers failed, want %d", f, floods)
		}
		if got := logs.n.Load(); got > 10 {
			t.Errorf("%d broadcast requests logged %d transfer lines", floods, got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}
