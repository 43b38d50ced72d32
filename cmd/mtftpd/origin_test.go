package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestServeOriginAndTemplates runs the binary as a rack server: tftp.root
// is an upstream origin (a second HTTP server in the test), http.root the
// same origin, and pxelinux configs are rendered from [templates] with a
// [[dhcp.host]]'s vars while DHCP is off. The config wiring is what is
// under test: one cache shared by TFTP and HTTP, one origin hit.
func TestServeOriginAndTemplates(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/boot/pxelinux.0" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"pxe-1"`)
		io.WriteString(w, "pretend pxelinux.0\n")
	}))
	defer up.Close()
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "templates", "pxelinux.cfg")
	os.MkdirAll(tmpl, 0o755)
	os.WriteFile(filepath.Join(tmpl, "01-{mac}"), []byte("APPEND inst.ks={{.HTTP}}/ks/{{.MAC}}.cfg role={{.Vars.role}} host={{.Hostname}}\n"), 0o644)
	tftpAddr, httpAddr := freePort(t), freeTCPPort(t)
	cfg := filepath.Join(dir, "rack.toml")
	os.WriteFile(cfg, fmt.Appendf(nil, `[tftp]
listen = %q
root = "%s/boot/"
[http]
listen = %q
[origin]
cache_dir = %q
[templates]
dir = %q
[mtftp]
enabled = false
[[dhcp.host]]
mac = "52:54:00:12:34:56"
hostname = "db1"
vars = { role = "db" }
`, tftpAddr, up.URL, httpAddr, filepath.Join(dir, "cache"), filepath.Join(dir, "templates")), 0o644)
	srv := exec.Command(bin, "serve", "--config", cfg)
	logs := new(syncBuffer)
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	out := filepath.Join(dir, "out")
	var msg string
	code := 1
	for i := 0; i < 100 && code != 0; i++ {
		msg, code = mtftpd(t, "get", "--retries", "1", "--timeout", "100ms", "-o", out, tftpAddr, "pxelinux.0")
		if code != 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if b, _ := os.ReadFile(out); code != 0 || string(b) != "pretend pxelinux.0\n" {
		t.Fatalf("TFTP pxelinux.0 from the origin: exit %d %s %q\n%s", code, msg, b, logs.String())
	}
	resp, err := http.Get("http://" + httpAddr + "/pxelinux.0")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "pretend pxelinux.0\n" {
		t.Fatalf("HTTP pxelinux.0: %d %q", resp.StatusCode, body)
	}
	if h := hits.Load(); h != 1 {
		t.Errorf("origin hits after a TFTP and an HTTP download: %d, want 1 (one shared cache)", h)
	}
	msg, code = mtftpd(t, "get", "-o", out, tftpAddr, "pxelinux.cfg/01-52-54-00-12-34-56")
	want := "APPEND inst.ks=http://" + httpAddr + "/ks/52:54:00:12:34:56.cfg role=db host=db1\n"
	if b, _ := os.ReadFile(out); code != 0 || string(b) != want {
		t.Fatalf("template over TFTP: exit %d %s\n%q\nwant %q", code, msg, b, want)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "cache", "*", "files", "pxelinux.0")); len(m) != 1 {
		t.Errorf("cache layout: %v", m)
	}
	if !strings.Contains(logs.String(), "serving from an upstream origin") {
		t.Errorf("no start-up line for the origin:\n%s", logs.String())
	}
}
