package tftp_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

// TestTransfersRegistry holds a transfer open with a client that ACKs on
// demand and checks what Transfers reports while it runs and after it
// ended, and that the RTO histogram got one observation.
func TestTransfersRegistry(t *testing.T) {
	root := t.TempDir()
	const size = 10*512 + 100
	writeRandom(t, filepath.Join(root, "boot", "slow.img"), size, 7)
	ts := startServer(t, root, nil)

	c := testutil.StartSlowTFTP(t, ts.Addr, "boot/slow.img")
	c.Next(t) // ACK 1: the server has 512 bytes acknowledged
	c.Next(t) // ACK 2
	running, _ := ts.Transfers()
	if len(running) != 1 {
		t.Fatalf("%d running transfers, want 1: %+v", len(running), running)
	}
	r := running[0]
	if r.File != "boot/slow.img" || r.Op != "read" || r.Size != size || r.BlockSize != 512 || r.WindowSize != 1 || !r.Running() {
		t.Errorf("running transfer %+v", r)
	}
	if r.Bytes != 1024 {
		t.Errorf("running transfer has %d bytes acknowledged, want 1024 (two ACKs)", r.Bytes)
	}
	if r.Client.Port() == 0 || r.Start.IsZero() || r.Outcome != "" {
		t.Errorf("running transfer %+v: client, start or outcome wrong", r)
	}

	c.Finish(t)
	// The server ends the transfer when the final ACK arrives; give the
	// session goroutine a moment to record it (bounded poll, no timing
	// asserted).
	var recent []tftp.Transfer
	for i := 0; i < 200; i++ {
		if running, recent = ts.Transfers(); len(running) == 0 && len(recent) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(running) != 0 || len(recent) != 1 {
		t.Fatalf("after the final ACK: %d running, %d recent, want 0 and 1", len(running), len(recent))
	}
	f := recent[0]
	if f.ID != r.ID || f.Outcome != tftp.OutcomeOK || f.Bytes != size || f.End.IsZero() || f.RTO <= 0 || f.Rate(time.Now()) <= 0 {
		t.Errorf("finished transfer %+v", f)
	}
	if h := ts.RTOs(); h.Count != 1 || h.Sum != f.RTO {
		t.Errorf("RTO histogram: %d observations summing to %v, want 1 and %v", h.Count, h.Sum, f.RTO)
	}
	if caps, _ := ts.Listener(); caps.KernelRelease == "" {
		t.Errorf("Listener caps %+v: not probed", caps)
	}
}

// TestRecentRing fills the ring of finished transfers past its size and
// checks it keeps the newest, newest first.
func TestRecentRing(t *testing.T) {
	root := t.TempDir()
	writeRandom(t, filepath.Join(root, "tiny"), 10, 1)
	ts := startServer(t, root, nil)
	const n = tftp.RecentTransfers + 3
	var recent []tftp.Transfer
	for id := uint64(1); id <= n; id++ {
		c := testutil.StartSlowTFTP(t, ts.Addr, "tiny")
		c.Finish(t)
		// One at a time, so the ring's order is the start order.
		for i := 0; i < 200; i++ {
			if _, recent = ts.Transfers(); len(recent) > 0 && recent[0].ID == id {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	if len(recent) != tftp.RecentTransfers {
		t.Fatalf("%d recent transfers, want %d", len(recent), tftp.RecentTransfers)
	}
	for i, tr := range recent {
		if want := uint64(n - i); tr.ID != want {
			t.Fatalf("recent[%d].ID = %d, want %d (newest first)", i, tr.ID, want)
		}
	}
}

// BenchmarkTransfersSnapshot is what one status poll costs the registry
// with 200 transfers running: the time the registry mutex is held (the
// only moment transfer starts and ends can wait on a status page).
func BenchmarkTransfersSnapshot(b *testing.B) {
	root := b.TempDir()
	writeRandom(b, filepath.Join(root, "f"), 4*512, 3)
	ts := startServer(b, root, func(s *tftp.Server) { s.MaxPerClient = 1000 })
	cs := make([]*testutil.SlowTFTP, 200)
	for i := range cs {
		cs[i] = testutil.StartSlowTFTP(b, ts.Addr, "f")
	}
	b.ReportAllocs()
	for b.Loop() {
		if running, _ := ts.Transfers(); len(running) != len(cs) {
			b.Fatalf("%d running, want %d", len(running), len(cs))
		}
	}
	b.StopTimer()
	for _, c := range cs {
		c.Finish(b)
	}
}
