package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestSystemdUnit: dist/mtftpd.service keeps its hardening (a unit that
// lost CAP_NET_BIND_SERVICE or ProtectSystem would still start, so the
// test names them), lets mtftpd drop its capability (capset allowed after
// the @privileged deny list, issue 13 finding 19) and write its state,
// uploads and cache without edits, and systemd-analyze verify accepts it
// without a single warning (an unknown or misspelt key is only a warning
// there).
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../dist/mtftpd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "ExecReload=/bin/kill -HUP $MAINPID",
		"StateDirectory=mtftpd mtftpd/uploads", "CacheDirectory=mtftpd", "User=mtftpd",
		"ExecStart=/usr/local/bin/mtftpd serve --config /etc/mtftpd/mtftpd.toml",
		"SystemCallFilter=~@privileged", "SystemCallFilter=capset",
	} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("dist/mtftpd.service lacks %q", want)
		}
	}
	// Later SystemCallFilter= lines edit the earlier ones: capset must
	// come back after the deny list that removes it.
	if strings.Index(string(unit), "SystemCallFilter=capset") < strings.Index(string(unit), "SystemCallFilter=~@privileged") {
		t.Error("SystemCallFilter=capset comes before ~@privileged, which then removes it again")
	}
	sa := testutil.Tool(t, "systemd-analyze") // the unit's syntax
	// verify wants ExecStart's binary to exist: point it at the test build.
	path := filepath.Join(t.TempDir(), "mtftpd.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/mtftpd", bin)), 0o644)
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	var ours []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "mtftpd.service") {
			ours = append(ours, strings.TrimSpace(line))
		}
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
