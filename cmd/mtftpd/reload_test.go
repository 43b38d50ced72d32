package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// TestSIGHUPReload runs the binary with a config file and rewrites it
// between SIGHUPs: live keys apply (log level, per-client rate limit),
// an invalid file and a change that needs a restart (the listen address)
// are refused with a log line that says why, and the server keeps serving
// with its running config throughout.
func TestSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(root, "f"), []byte("hello"), 0o644)
	addr := freePort(t)
	cfgPath := filepath.Join(dir, "mtftpd.toml")
	writeCfg := func(tftpExtra, level string) {
		t.Helper()
		c := fmt.Sprintf("[tftp]\nlisten = %q\nroot = %q\n%s\n[http]\nlisten = \"\"\n[log]\nformat = \"json\"\nlevel = %q\n",
			addr, root, tftpExtra, level)
		if err := os.WriteFile(cfgPath, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("", "info")
	srv := exec.Command(bin, "serve", "--config", cfgPath)
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	get := func() (string, int) {
		return mtftpd(t, "get", "--retries", "2", "--timeout", "200ms", "-o", filepath.Join(dir, "out"), addr, "f")
	}
	waitServing(t, addr, "f", filepath.Join(dir, "out"), &logs)
	// hup sends SIGHUP and waits (bounded) for a log line containing want.
	hup := func(want string) {
		t.Helper()
		before := strings.Count(logs.String(), want)
		srv.Process.Signal(syscall.SIGHUP)
		for i := 0; i < 200; i++ {
			if strings.Count(logs.String(), want) > before {
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		t.Fatalf("no %q after SIGHUP:\n%s", want, logs.String())
	}
	serving := func(when string) {
		t.Helper()
		if out, code := get(); code != 0 {
			t.Fatalf("%s: get failed: %s\n%s", when, out, logs.String())
		}
	}
	missing := func() {
		mtftpd(t, "get", "--retries", "1", "--timeout", "200ms", "-o", filepath.Join(dir, "x"), addr, "missing-file")
	}

	missing()
	if strings.Contains(logs.String(), "missing-file") {
		t.Fatalf("a not-found refusal logged at info level:\n%s", logs.String())
	}
	// Live: debug logging and a per-client limit of 1 request a second.
	writeCfg("max_requests_per_sec = 1\nrequest_burst = 1", "debug")
	hup("config reloaded")
	l := logs.String()
	if !strings.Contains(l, "log.level") || !strings.Contains(l, "tftp.max_requests_per_sec") {
		t.Fatalf("reload does not name what changed:\n%s", l)
	}
	missing()
	if !strings.Contains(logs.String(), "missing-file") {
		t.Fatalf("debug level not applied: no not-found line:\n%s", logs.String())
	}
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: "missing", Mode: "octet"}).Marshal(nil)
	for range 20 {
		c.Write(rrq)
	}
	c.Close()
	for i := 0; i < 100 && !strings.Contains(logs.String(), "rate limit"); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "rate limit") {
		t.Fatalf("20 requests at once under a limit of 1/s: nothing limited\n%s", logs.String())
	}

	// Invalid: refused, the running config stays.
	writeCfg("retries = 0", "info")
	hup("invalid, keeping the running config")
	if !strings.Contains(logs.String(), "tftp.retries") {
		t.Fatalf("invalid reload does not name the field:\n%s", logs.String())
	}
	writeCfg("", "info") // also lifts the rate limit
	hup("config reloaded")
	serving("after an invalid reload")

	// Needs a restart: refused, still serving on the old address.
	other := freePort(t)
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("[tftp]\nlisten = %q\nroot = %q\n[http]\nlisten = \"\"\n[log]\nformat = \"json\"\n", other, root)), 0o644)
	hup("only change with a restart")
	if !strings.Contains(logs.String(), `"needs_restart":["tftp.listen"]`) {
		t.Fatalf("restart-only key not named:\n%s", logs.String())
	}
	serving("after a refused listen change")
	writeCfg("", "info")
	hup("nothing changed")

	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
}
