package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestBenchMCastLab is the CI run of `mtftpd bench mcast`: in the lab, 10
// receivers of each dialect (native, RFC 2090, PXE MTFTP), in one client
// namespace, download one 1 MiB file from mtftpd together; every receiver
// must hold the verified file, the JSON report must parse with the
// documented schema, and `bench compare` must read two of them. No
// thresholds on time. Root only.
func TestBenchMCastLab(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Clients: 1})
	bin := testutil.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root := t.TempDir()
	const size = 1<<20 + 3
	writeFile(t, root, "f", size)

	logs := &testutil.SyncBuffer{}
	cmd := lab.Command(ctx, "srv", bin, "serve", "--tftp.listen", netlab.ServerAddr+":69", "--tftp.root", root,
		"--mtftp.pxe_listen", netlab.ServerAddr+":1759", "--log.level", "warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("mtftpd log:\n%s", logs)
		}
	})
	waitTFTP(t, ctx, lab, bin, netlab.ServerAddr+":69")

	// The receivers send from five addresses of their own, as a room
	// would (and as mtftpd's per-address cap wants).
	add := lab.Command(ctx, "c1", "ip", "-batch", "-")
	add.Stdin = strings.NewReader("addr add 192.0.2.10/24 dev eth0\naddr add 192.0.2.11/24 dev eth0\naddr add 192.0.2.12/24 dev eth0\n" +
		"addr add 192.0.2.13/24 dev eth0\naddr add 192.0.2.14/24 dev eth0\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("adding source addresses: %v\n%s", err, out)
	}
	dir := t.TempDir()
	var reports []string
	for _, dialect := range Dialects {
		report := filepath.Join(dir, dialect+".json")
		args := []string{"bench", "mcast", "--target", netlab.ServerAddr, "--file", "f",
			"--receivers", "10", "--dialect", dialect, "--verify-file", filepath.Join(root, "f"),
			"--duration", "90s", "--dir", filepath.Join(dir, dialect), "--json", report}
		args, sources := append(args, "--source-addrs", "192.0.2.10-192.0.2.14"), 5
		out, err := lab.Run(ctx, "c1", bin, args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", dialect, err, out)
		}
		rep := readMCastReport(t, report)
		if rep.Dialect != dialect || rep.Receivers != 10 || rep.Completed != 10 || rep.Failed != 0 || rep.SuccessRatio != 1 ||
			rep.FileSize != size || rep.AllVerifiedSeconds <= 0 || rep.BytesNeeded != 10*size ||
			rep.BytesReceived < rep.BytesNeeded || !strings.HasPrefix(rep.Verify, "sha256:") || len(rep.Errors) != 0 ||
			rep.SourceAddrs != sources {
			t.Fatalf("%s: report %+v\n%s", dialect, rep, out)
		}
		// --dir keeps nothing back: every receiver's file is there, whole.
		for i := range 10 {
			if fi, err := os.Stat(filepath.Join(dir, dialect, receiverFile(i))); err != nil || fi.Size() != size {
				t.Fatalf("%s: receiver %d's file: %v", dialect, i+1, err)
			}
		}
		t.Logf("%s: all 10 verified in %.2f s, p50 %.0f ms, received/needed %.3f, repairs asked %d, masters %d",
			dialect, rep.AllVerifiedSeconds, rep.ReceiverMs.P50, rep.ReceivedRatio, rep.RepairsAsked, rep.Masters)
		reports = append(reports, report)
	}
	out, err := lab.Run(ctx, "c1", bin, "bench", "compare", reports[0], reports[2])
	if err != nil || !strings.Contains(out, "bench mcast") || !strings.Contains(out, "all verified s") {
		t.Fatalf("bench compare: %v\n%s", err, out)
	}
}

// readMCastReport parses a multicast report strictly: every field must
// be one the schema documents.
func readMCastReport(t *testing.T, path string) MCastReport {
	t.Helper()
	var rep MCastReport
	decodeStrict(t, path, &rep)
	if rep.Schema != MCastReportSchema {
		t.Fatalf("%s: schema %q, want %q", path, rep.Schema, MCastReportSchema)
	}
	return rep
}
