package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// hpaBinaries are where tftpd-hpa's server may be: installed, or unpacked
// by scripts/test-deps.sh (installing the package would start a service).
var hpaBinaries = []string{"/usr/sbin/in.tftpd", "/var/cache/mtftpd-test/tftpd-hpa/usr/sbin/in.tftpd"}

// findHPA is the first of hpaBinaries that exists, "" if none.
func findHPA() string {
	for _, p := range hpaBinaries {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// labSources are extra addresses of the bench's client namespace: one per
// simulated client, as in a room of machines (mtftpd also caps transfers
// per client address at 16 by default).
const labSources = "192.0.2.10-192.0.2.29"

// TestBenchTFTPLab is the CI smoke run of `mtftpd bench tftp`: in the
// lab, 20 clients of each profile download one file from mtftpd and from
// tftpd-hpa (both in the server namespace); every download must verify
// (sha256 and size) and every JSON report must parse with the documented
// schema. No thresholds on time. Root only.
func TestBenchTFTPLab(t *testing.T) {
	hpa := findHPA()
	if hpa == "" {
		testutil.Unavailable(t, "tftpd-hpa's in.tftpd not found at %s", strings.Join(hpaBinaries, " or "))
	}
	lab := netlab.New(t, netlab.Options{Clients: 1})
	bin := testutil.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A world-readable root: in.tftpd drops to user nobody.
	root, err := os.MkdirTemp("", "mtftpd-bench-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	writeFile(t, root, "f", 256<<10+7)
	os.Chmod(filepath.Join(root, "f"), 0o644)

	addrs, err := ParseSourceAddrs(labSources)
	if err != nil {
		t.Fatal(err)
	}
	var batch strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&batch, "addr add %s/24 dev eth0\n", a)
	}
	add := lab.Command(ctx, "c1", "ip", "-batch", "-")
	add.Stdin = strings.NewReader(batch.String())
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("adding source addresses: %v\n%s", err, out)
	}

	servers := []struct {
		name string
		port string
		args []string
	}{
		{"mtftpd", "69", []string{bin, "serve", "--tftp.listen", netlab.ServerAddr + ":69", "--tftp.root", root, "--log.level", "warn"}},
		{"tftpd-hpa", "6970", []string{hpa, "--foreground", "--listen", "--user", "nobody", "--address", netlab.ServerAddr + ":6970", "--secure", root}},
	}
	for _, s := range servers {
		logs := &testutil.SyncBuffer{}
		cmd := lab.Command(ctx, "srv", s.args[0], s.args[1:]...)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s log:\n%s", s.name, logs)
			}
		})
		target := netlab.ServerAddr + ":" + s.port
		waitTFTP(t, ctx, lab, bin, target)
		// bios twice: the batch engine too (IP_PKTINFO sources on eth0).
		for _, run := range []struct{ profile, engine string }{{"bios", "goroutine"}, {"bios", "batch"}, {"uefi", "goroutine"}, {"ipxe", "goroutine"}, {"linux", "goroutine"}} {
			profile := run.profile
			report := filepath.Join(t.TempDir(), s.name+"-"+profile+"-"+run.engine+".json")
			out, err := lab.Run(ctx, "c1", bin, "bench", "tftp", "--target", target, "--file", "f",
				"--clients", "20", "--profile", profile, "--engine", run.engine, "--source-addrs", labSources,
				"--verify-file", filepath.Join(root, "f"), "--max-time", "60s", "--json", report)
			if err != nil {
				t.Fatalf("%s, profile %s: %v", s.name, profile, err)
			}
			rep := readReport(t, report)
			if rep.Completed != 20 || rep.Failed != 0 || rep.Transfers != 20 || rep.SuccessRatio != 1 || rep.Engine != run.engine ||
				rep.FileSize != 256<<10+7 || !strings.HasPrefix(rep.Verify, "sha256:") || rep.Profile.Name != profile {
				t.Fatalf("%s, profile %s: report %+v\n%s", s.name, profile, rep, out)
			}
			t.Logf("%s %s (%s): %.1f MB/s aggregate, p99 %.0f ms, negotiated %v", s.name, profile, run.engine, rep.AggregateMBps, rep.TransferMs.P99, rep.Negotiated)
		}
	}
}

// waitTFTP waits (bounded) until the server at target serves "f".
func waitTFTP(t *testing.T, ctx context.Context, lab *netlab.Lab, bin, target string) {
	t.Helper()
	var out string
	var err error
	for range 50 {
		out, err = lab.Run(ctx, "c1", bin, "bench", "tftp", "--target", target, "--file", "f",
			"--timeout", "200ms", "--retries", "2", "-q")
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no TFTP server answering at %s: %v\n%s", target, err, out)
}

// readReport parses a JSON report strictly: every field must be one the
// schema documents.
func readReport(t *testing.T, path string) TFTPReport {
	t.Helper()
	var rep TFTPReport
	decodeStrict(t, path, &rep)
	if rep.Schema != TFTPReportSchema {
		t.Fatalf("%s: schema %q, want %q", path, rep.Schema, TFTPReportSchema)
	}
	return rep
}

// decodeStrict decodes the JSON file at path into v, refusing any field
// v does not have.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestBenchTFTPCLI runs the built binary against an in-process server on
// loopback (no root needed): a report is written, parses, and `bench
// compare` reads two of them.
func TestBenchTFTPCLI(t *testing.T) {
	bin := testutil.Binary(t)
	root := t.TempDir()
	writeFile(t, root, "f", 100_000)
	srv := startLoopServer(t, root)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var reports []string
	for _, profile := range []string{"bios", "linux"} {
		report := filepath.Join(dir, profile+".json")
		out, err := exec.CommandContext(ctx, bin, "bench", "tftp", "--target", srv.addr, "--file", "f", "--clients", "3",
			"--profile", profile, "--verify-file", filepath.Join(root, "f"), "--json", report).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "3/3 downloads completed, verified") {
			t.Fatalf("bench tftp --profile %s: %v\n%s", profile, err, out)
		}
		if rep := readReport(t, report); rep.Completed != 3 {
			t.Fatalf("%s: %+v", report, rep)
		}
		reports = append(reports, report)
	}
	out, err := exec.CommandContext(ctx, bin, "bench", "compare", reports[0], reports[1]).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "aggregate MB/s") || !strings.Contains(string(out), "x  ") {
		t.Fatalf("bench compare: %v\n%s", err, out)
	}
	// A failing swarm exits non-zero and says how many failed.
	out, err = exec.CommandContext(ctx, bin, "bench", "tftp", "--target", srv.addr, "--file", "missing", "--clients", "2", "-q").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "2 of 2 downloads failed") || !strings.Contains(string(out), "remote_1 2") {
		t.Fatalf("missing file: %v\n%s", err, out)
	}
}
