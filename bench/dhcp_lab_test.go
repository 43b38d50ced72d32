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

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestMain removes cmd/mtftpd, built on first use (testutil.Binary).
func TestMain(m *testing.M) { testutil.Main(m) }

// TestBenchDHCPRefusesWithoutIface: the CLI never picks an interface to
// broadcast on by itself, nor a TFTP target, and names every bad flag.
// Needs no root: it must stop before any socket.
func TestBenchDHCPRefusesWithoutIface(t *testing.T) {
	bin := testutil.Binary(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "dhcp", "--clients", "1"}, "--iface is required"},
		{[]string{"bench", "dhcp", "--iface", "", "--clients", "1"}, "--iface is required"},
		{[]string{"bench", "tftp"}, "--target HOST:PORT and --file NAME are required"},
		{[]string{"bench", "tftp", "--target", "127.0.0.1:9", "--file", "f", "--profile", "bios", "--blksize", "512"}, "--profile bios fixes them"},
		{[]string{"bench", "tftp", "--target", "127.0.0.1:9", "--file", "f", "--profile", "efi"}, `unknown --profile "efi"`},
		{[]string{"bench", "tftp", "--target", "127.0.0.1:9", "--file", "f", "--verify", "sha256:12"}, "not sha256:<64 hex digits>"},
		{[]string{"bench", "tftp", "--target", "127.0.0.1:9", "--file", "f", "--source-addrs", "192.0.2.9-192.0.2.1"}, "A ≤ B"},
		{[]string{"bench", "tftp", "--target", "127.0.0.1", "--file", "f"}, "not host:port"},
		{[]string{"bench", "mcast"}, "--target HOST[:PORT] and --file NAME are required"},
		{[]string{"bench", "mcast", "--target", "127.0.0.1", "--file", "f", "--dialect", "udpcast"}, `Dialect: "udpcast"`},
		{[]string{"bench", "mcast", "--target", "127.0.0.1", "--file", "f", "--verify", "sha256:1", "--verify-file", "x"}, "not both"},
		{[]string{"bench", "compare", "a.json"}, "need two JSON reports"},
		{[]string{"bench", "nope"}, `unknown subcommand "nope"`},
		{[]string{"bench"}, "need a subcommand"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, c.args...).CombinedOutput()
		cancel()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(string(out), c.want) {
			t.Errorf("mtftpd %s: %v, want a non-zero exit saying %q:\n%s", strings.Join(c.args, " "), err, c.want, out)
		}
	}
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer = testutil.SyncBuffer

// TestDHCPStormLab runs `mtftpd serve` (DHCP server mode, lease file) in
// the lab's server namespace and `mtftpd bench dhcp` (100 clients, 20 at
// once) in a client namespace without an address: every client gets a
// lease, no address twice, and all 100 are on disk after the server stops.
// Root only; nothing leaves the lab.
func TestDHCPStormLab(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Clients: 1, NoAddr: true})
	bin := testutil.Binary(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "tftp")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	leases := filepath.Join(dir, "leases.json")
	cfg := filepath.Join(dir, "mtftpd.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
[tftp]
listen = "192.0.2.1:69"
root = %q

[dhcp]
mode = "server"
lease_file = %q

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.10-192.0.2.250"
`, root, leases)), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := lab.Command(ctx, "srv", bin, "serve", "--config", cfg, "--log.format", "json")
	logs := &lockedBuffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Process.Kill()
			srv.Wait()
		}
	})
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "dhcp server listening"); {
		if time.Now().After(deadline) {
			t.Fatalf("mtftpd did not start its DHCP server:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	report := filepath.Join(dir, "report.json")
	out, err := lab.Run(ctx, "c1", bin, "bench", "dhcp", "--iface", "eth0", "--clients", "100",
		"--concurrency", "20", "--duration", "30s", "--json", report)
	t.Logf("mtftpd bench dhcp:\n%s", out)
	if err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, logs)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep DHCPReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, b)
	}
	if rep.Completed != 100 || rep.Failed != 0 || rep.DuplicateOffers != 0 || rep.DuplicateAcks != 0 || rep.NAKs != 0 {
		t.Fatalf("report:\n%s\nserver log:\n%s", b, logs)
	}
	if len(rep.Servers) != 1 || rep.Servers["192.0.2.1"] != 100 {
		t.Fatalf("ACKs by server: %v", rep.Servers)
	}

	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	stopped = true
	onDisk, err := dhcp.ReadLeaseFile(leases)
	if err != nil {
		t.Fatalf("lease file: %v", err)
	}
	ips, macs := map[string]bool{}, map[string]bool{}
	for _, l := range onDisk {
		if mac := l.MAC.String(); strings.HasPrefix(mac, "02:6d:74:") {
			ips[l.IP.String()], macs[mac] = true, true
		}
	}
	if len(ips) != 100 || len(macs) != 100 {
		t.Fatalf("lease file holds %d addresses for %d storm MACs, want 100 each", len(ips), len(macs))
	}
}
