package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/netlab"
)

// leaseScript reports the leased address: udhcpc passes $ip and prints
// our stdout, dhclient passes $new_ip_address.
const leaseScript = `#!/bin/sh
case "$1" in bound|renew) echo "LEASE $ip" ;; esac
[ -n "$new_ip_address" ] && echo "LEASE $new_ip_address" >> "@OUT@"
exit 0
`

func clientLease(t *testing.T, lab *netlab.Lab, ns, kind string) string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script.sh")
	out := filepath.Join(dir, "lease.out")
	// dhclient runs its script with a clean environment: the output
	// path is written into the script.
	os.WriteFile(script, []byte(strings.ReplaceAll(leaseScript, "@OUT@", out)), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	switch kind {
	case "udhcpc":
		requireTools(t, "udhcpc")
		cmd = lab.Command(ctx, ns, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", script)
	case "dhclient":
		requireTools(t, "dhclient")
		// A fresh lease database each run: the client must be remembered
		// by the server, not by itself.
		cmd = lab.Command(ctx, ns, "dhclient", "-4", "-1", "-v", "-sf", script,
			"-lf", filepath.Join(dir, "dhclient.leases"), "-pf", filepath.Join(dir, "dhclient.pid"), "eth0")
	}
	b, err := cmd.CombinedOutput()
	if kind == "dhclient" {
		// -1 leaves dhclient running in the background after the lease.
		lab.Run(context.Background(), ns, "dhclient", "-x", "-pf", filepath.Join(dir, "dhclient.pid"))
		o, _ := os.ReadFile(out)
		b = append(b, o...)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "LEASE ") {
			return strings.TrimSpace(l[6:])
		}
	}
	t.Fatalf("%s in %s got no lease (%v):\n%s", kind, ns, err, b)
	return ""
}

// TestDHCPClientsKeepLeases: udhcpc and dhclient get leases from mtftpd
// in server mode; after mtftpd restarts (leases on disk), fresh runs of
// both get the same addresses.
func TestDHCPClientsKeepLeases(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Clients: 2, NoAddr: true})
	leases := filepath.Join(t.TempDir(), "leases.json")
	cfg := serverConfig(t.TempDir(), `
[dhcp]
mode = "server"
lease_file = "`+leases+`"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"
router = "192.0.2.1"
dns = ["192.0.2.1"]
domain = "lab.test"
lease_time = "10m"
`)
	srv := startMtftpd(t, lab, "srv", cfg, "dhcp server listening")
	a1 := clientLease(t, lab, "c1", "udhcpc")
	a2 := clientLease(t, lab, "c2", "dhclient")
	if a1 == a2 || !strings.HasPrefix(a1, "192.0.2.1") || !strings.HasPrefix(a2, "192.0.2.1") {
		t.Fatalf("leases %q and %q", a1, a2)
	}
	srv.stop(t)
	onDisk, err := dhcp.ReadLeaseFile(leases)
	held := map[string]bool{}
	for _, l := range onDisk {
		held[l.IP.String()] = true
	}
	if err != nil || !held[a1] || !held[a2] {
		t.Fatalf("lease file after shutdown (%v): %v", err, onDisk)
	}
	srv.start(t, lab, "srv", []string{"dhcp server listening"})
	// Drop the addresses the first runs configured, so the clients start
	// from nothing (INIT, DISCOVER).
	for _, ns := range []string{"c1", "c2"} {
		lab.Run(context.Background(), ns, "ip", "addr", "flush", "dev", "eth0")
	}
	// The other order this time: a server that forgot its leases would
	// hand the first free address to whoever asks first.
	if b2 := clientLease(t, lab, "c2", "dhclient"); b2 != a2 {
		t.Fatalf("dhclient after restart got %s, before %s", b2, a2)
	}
	if b1 := clientLease(t, lab, "c1", "udhcpc"); b1 != a1 {
		t.Fatalf("udhcpc after restart got %s, before %s", b1, a1)
	}
}
