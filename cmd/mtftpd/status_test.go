package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/status"
)

// TestStatusLive holds a transfer of the demo's big.img open with a client
// that ACKs on demand, then checks that /api/transfers, `mtftpd status`
// and the status page in headless Chromium all show it running. The
// page's screenshots (desktop and phone widths) are kept as artifacts in
// $MTFTPD_ARTIFACTS, or the temp directory; the log names them.
func TestStatusLive(t *testing.T) {
	dir := t.TempDir()
	_, addr, httpAddr, logs := startDemo(t, filepath.Join(dir, "hello.txt"))
	c := testutil.StartSlowTFTP(t, addr, "big.img")
	c.Next(t)
	base := "http://" + httpAddr

	resp, err := http.Get(base + "/api/transfers")
	if err != nil {
		t.Fatal(err)
	}
	var s status.Snapshot
	err = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Transfers) != 1 || s.Transfers[0].File != "big.img" || s.Transfers[0].Size != demoBigSize || s.Transfers[0].Bytes != 512 {
		t.Fatalf("/api/transfers while big.img runs: %+v", s.Transfers)
	}

	out, code := mtftpd(t, "status", httpAddr)
	if code != 0 || !strings.Contains(out, "big.img") || !strings.Contains(out, "1 transfers running") || !strings.Contains(out, "[..........]") {
		t.Fatalf("mtftpd status: exit %d\n%s", code, out)
	}

	chromium := testutil.Tool(t, "chromium")
	browse := func(args ...string) string {
		t.Helper()
		c.Next(t) // keep the transfer moving: the server drops a client silent for long
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		// --no-sandbox: Chromium refuses to run as root with its sandbox.
		// --virtual-time-budget lets the page's script fetch and render
		// before the DOM is dumped or the screenshot taken.
		all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--user-data-dir=" + filepath.Join(dir, "chromium"), "--virtual-time-budget=5000"}, args...)
		cmd := exec.CommandContext(ctx, chromium, append(all, base+"/")...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.String()
	}

	dom := browse("--dump-dom")
	// The clients table lists the running transfer's file, put there by
	// the page's script from /api/transfers ("/" redirects to /status/).
	clients := dom[strings.Index(dom, `id="clients"`)+1:]
	clients = clients[:max(strings.Index(clients, "</table>"), 0)]
	if !strings.Contains(clients, `<code class="file">big.img</code>`) || !strings.Contains(clients, "127.0.0.1") {
		t.Fatalf("status page DOM has no running big.img in the clients table:\n%s\nserver log:\n%s", dom, logs.String())
	}
	if !strings.Contains(dom, "1 transfers running") {
		t.Errorf("status page summary missing:\n%s", dom)
	}

	artifacts := os.Getenv("MTFTPD_ARTIFACTS")
	if artifacts == "" {
		artifacts = os.TempDir()
	}
	for _, shot := range []struct{ name, size string }{{"desktop", "1280,800"}, {"phone", "390,844"}} {
		path := filepath.Join(artifacts, "mtftpd-status-"+shot.name+".png")
		browse("--screenshot="+path, "--window-size="+shot.size, "--hide-scrollbars")
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width < 300 {
			t.Fatalf("screenshot %s: %v, %dx%d", path, err, cfg.Width, cfg.Height)
		}
		t.Logf("status page screenshot (%s): %s", shot.name, path)
	}
	// The held transfer ends when the server is killed at cleanup.
}

// TestStatusAPIRestricted: with http.api_allow, /api/transfers and
// /metrics answer only the listed clients (`mtftpd status` from elsewhere
// says why), files are served to everyone, and a DNS-rebinding Host is
// refused (issue 13 finding 17).
func TestStatusAPIRestricted(t *testing.T) {
	dir := t.TempDir()
	_, _, httpAddr, logs := startDemo(t, filepath.Join(dir, "hello.txt"), "--http.api_allow", "127.0.0.2/32,192.0.2.0/24")
	out, code := mtftpd(t, "status", httpAddr)
	if code == 0 || !strings.Contains(out, "403") || !strings.Contains(out, "http.api_allow") {
		t.Fatalf("mtftpd status from 127.0.0.1 outside api_allow: exit %d\n%s\n%s", code, out, logs.String())
	}
	get := func(src, host, path string) int {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		src, host, path string
		code            int
	}{
		{"127.0.0.1", "", "/hello.txt", http.StatusOK},
		{"127.0.0.1", "", "/metrics", http.StatusForbidden},
		{"127.0.0.2", "", "/metrics", http.StatusOK},
		{"127.0.0.2", "", "/api/transfers", http.StatusOK},
		{"127.0.0.2", "rebind.attacker.example", "/api/transfers", http.StatusForbidden},
	} {
		if got := get(c.src, c.host, c.path); got != c.code {
			t.Errorf("%s from %s (Host %q): %d, want %d", c.path, c.src, c.host, got, c.code)
		}
	}
}
