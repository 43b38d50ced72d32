package tftp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// memLoopConn is an event loop's socket on the in-memory network: one
// datagram per read, one "syscall" per flush.
type memLoopConn struct{ *memnet.Conn }

func (m memLoopConn) ReadBatch(bufs [][]byte, out []udpio.Packet) (int, error) {
	n, from, err := m.Conn.ReadFrom(bufs[0])
	if err != nil {
		return 0, err
	}
	out[0] = udpio.Packet{Data: bufs[0][:n], Src: from}
	return 1, nil
}

func (m memLoopConn) WriteMessages(ms []udpio.Message) (int, int, error) {
	for _, msg := range ms {
		m.Conn.WriteTo(append(append([]byte(nil), msg.Hdr...), msg.Payload...), msg.Dst)
	}
	return len(ms), 1, nil
}

// loopFiles writes the files the loop tests serve: sizes at and around
// block boundaries, and one of a few hundred blocks.
func loopFiles(t *testing.T) (root string, files map[string][]byte) {
	root = t.TempDir()
	files = map[string][]byte{}
	for i, size := range []int{0, 1, 511, 512, 513, 1468 * 3, 20_003, 150_001} {
		name := fmt.Sprintf("f%d", i)
		files[name] = testData(size, uint64(size)+7)
		if err := os.WriteFile(filepath.Join(root, name), files[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, files
}

// startLoop runs srv in single-port mode on one event loop bound at
// 192.0.2.1:69 of n (transfers it hands to a goroutine open their
// sockets there too); stop shuts it down and returns Serve's error.
func startLoop(t *testing.T, n *memnet.Net, srv *Server) (addr netip.AddrPort, stop func() error) {
	addr = netip.MustParseAddrPort("192.0.2.1:69")
	ln := n.Bind(addr)
	if srv.dial == nil { // what the loop hands to a goroutine of its own
		srv.dial = func(netip.Addr) (conn, error) { return n.Listen(addr.Addr().String()), nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.runLoops(ctx, nil, []loopConn{memLoopConn{ln}}) }()
	return addr, func() error { cancel(); return <-done }
}

// TestLoopThousandLockStep: one event loop serves 1,000 clients at once,
// most of them lock-step (blksize 512 or 1468, no window) as PXE ROMs
// fetch, some with a window, over a network losing 3 % of datagrams each
// way, in virtual time: every client gets its file byte for byte, every
// transfer ends ok, and nothing stays held.
func TestLoopThousandLockStep(t *testing.T) {
	root, files := loopFiles(t)
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(42)
		// 3 % each way. A request whose every reply or answer is lost is
		// given up (confirm_timeout; the goroutine mode's bound too):
		// with 30 s the first reply goes out 5 times, and all of them or
		// their answers are lost for 1 request in 10^6.
		n.Loss = 0.03
		srv := &Server{Files: store, SinglePort: true, ConfirmTimeout: 30 * time.Second, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
		addr, stop := startLoop(t, n, srv)
		const clients = 1000
		prefixes := []string{"192.0.2.", "198.51.100.", "203.0.113."}
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			name := fmt.Sprintf("f%d", i%len(files))
			ip := fmt.Sprintf("%s%d", prefixes[i%3], 2+(i/3)%250)
			c := &Client{BlockSize: []int{512, 1468, 512, 1468, 8}[i%5], TSize: i%2 == 0, Retries: 12}
			if i%10 == 9 {
				c.WindowSize = 8
			}
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 300 * time.Microsecond) // a room powering on
				cl := n.Listen(ip)
				defer cl.Close()
				var got bytes.Buffer
				if _, err := c.get(context.Background(), cl, addr, name, &got, time.Now()); err != nil {
					errs <- fmt.Errorf("client %d (%s, %s): %w", i, cl.Addr(), name, err)
					return
				}
				if !bytes.Equal(got.Bytes(), files[name]) {
					errs <- fmt.Errorf("client %d: %s: got %d bytes, want %d (content differs)", i, name, got.Len(), len(files[name]))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// The last final ACKs may be lost: those transfers end
		// ok-unconfirmed after their retries.
		time.Sleep(time.Minute)
		c := &srv.Counters
		if ok := c.Completed.Load() + c.Unconfirmed.Load(); ok != clients || c.Failed.Load() != 0 {
			t.Errorf("%d transfers ok, %d failed; want %d ok", ok, c.Failed.Load(), clients)
		}
		if c.Retransmits.Load() == 0 || c.Timeouts.Load() == 0 {
			t.Errorf("3%% loss caused no retransmission (retransmits %d, timeouts %d)", c.Retransmits.Load(), c.Timeouts.Load())
		}
		if a := srv.Active(); a != 0 {
			t.Errorf("%d transfers still active", a)
		}
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		running, recent := srv.Transfers()
		if len(running) != 0 || len(recent) != RecentTransfers {
			t.Errorf("%d running, %d recent transfers", len(running), len(recent))
		}
	})
}
