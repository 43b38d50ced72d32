package mirror

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestPagesRouting: Pages gets its paths and "/" redirects to the status
// page, files are still served (ranges too, through the status-code
// wrapper), and Responses counts every response by code.
func TestPagesRouting(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello, world\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: root, Pages: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "page "+r.URL.Path)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for _, c := range []struct {
		path, rng string
		code      int
		body      string
	}{
		{"/metrics", "", 200, "page /metrics"},
		{"/api/transfers", "", 200, "page /api/transfers"},
		{"/status/", "", 200, "page /status/"},
		{"/status/app.js", "", 200, "page /status/app.js"},
		{"/", "", 302, ""},
		{"/status", "", 200, "page /status"},
		{"/hello.txt", "", 200, "hello, world\n"},
		{"/hello.txt", "bytes=7-11", 206, "world"},
		{"/metricsfoo", "", 404, ""},
		{"/missing", "", 404, ""},
	} {
		req, _ := http.NewRequest("GET", base+c.path, nil)
		if c.rng != "" {
			req.Header.Set("Range", c.rng)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || (c.body != "" && string(b) != c.body) {
			t.Errorf("GET %s (range %q): %d %q, want %d %q", c.path, c.rng, resp.StatusCode, b, c.code, c.body)
		}
		if c.code == 302 && resp.Header.Get("Location") != "/status/" {
			t.Errorf("GET /: Location %q, want /status/", resp.Header.Get("Location"))
		}
	}
	got := s.Responses()
	if got[200] != 6 || got[206] != 1 || got[302] != 1 || got[404] != 2 {
		t.Errorf("Responses() = %v, want 200:6 206:1 302:1 404:2", got)
	}
	if codes := SortedCodes(got); !slices.Equal(codes, []int{200, 206, 302, 404}) {
		t.Errorf("SortedCodes = %v, want [200 206 302 404]", codes)
	}
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address src (127.0.0.0/8 is all local on Linux).
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// TestPagesRestricted is the attack of issue 13 finding 17: /api/transfers
// (MACs, host names) read through DNS rebinding — a page on a name the
// attacker controls, resolved to this server, so the browser sends
// "Host: rebind.attacker.example" — and read by any host on the LAN.
// Such a Host gets 403 while IP literals, localhost and http.api_hosts
// names pass; with PagesAllow only those prefixes read the pages; files
// are served to everyone.
func TestPagesRestricted(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "ks.cfg"), []byte("text\n"), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: root, Pages: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"clients":[{"mac":"52:54:00:12:34:56","hostname":"lab-07"}]}`)
	}), PagesHosts: []string{"boot.lab.example"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	port := ln.Addr().(*net.TCPAddr).Port

	get := func(c *http.Client, host, path string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	local := clientFrom("127.0.0.1")
	for _, c := range []struct {
		host, path string
		code       int
	}{
		{"rebind.attacker.example", "/api/transfers", http.StatusForbidden},
		{"rebind.attacker.example:8069", "/metrics", http.StatusForbidden},
		{"rebind.attacker.example", "/status/", http.StatusForbidden},
		{"rebind.attacker.example", "/ks.cfg", http.StatusOK}, // files: any name
		{"", "/api/transfers", http.StatusOK},                 // 127.0.0.1:port
		{fmt.Sprintf("localhost:%d", port), "/api/transfers", http.StatusOK},
		{"[::1]", "/api/transfers", http.StatusOK},
		{"BOOT.lab.example.", "/api/transfers", http.StatusOK},
	} {
		if got := get(local, c.host, c.path); got != c.code {
			t.Errorf("Host %q %s: %d, want %d", c.host, c.path, got, c.code)
		}
	}
	if n := s.Counters.PagesRefused.Load(); n != 3 {
		t.Errorf("PagesRefused = %d, want 3", n)
	}

	s.PagesAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	if got := get(local, "", "/api/transfers"); got != http.StatusForbidden {
		t.Errorf("/api/transfers from 127.0.0.1 outside api_allow: %d, want 403", got)
	}
	if got := get(local, "", "/ks.cfg"); got != http.StatusOK {
		t.Errorf("a file from 127.0.0.1 outside api_allow: %d, want 200", got)
	}
	if got := get(clientFrom("127.0.0.2"), "", "/metrics"); got != http.StatusOK {
		t.Errorf("/metrics from 127.0.0.2 in api_allow: %d, want 200", got)
	}
}

// An admin on the link whom http.api_allow = ["fe80::/10"] lets in
// reaches the pages from a link-local address, which Go reports with its
// zone ("fe80::1%eth0"); a global address outside the prefix does not.
func TestPagesAllowLinkLocal(t *testing.T) {
	s := &Server{PagesAllow: []netip.Prefix{netip.MustParsePrefix("fe80::/10")}}
	for remote, ok := range map[string]bool{"[fe80::1%eth0]:40000": true, "[fe80::1]:40000": true, "[2001:db8::1]:40000": false} {
		r := httptest.NewRequest(http.MethodGet, "/api/transfers", nil)
		r.RemoteAddr, r.Host = remote, "[fe80::2]"
		if why := s.pageRefused(r); (why == "") != ok {
			t.Errorf("%s: refused %q, want allowed %v", remote, why, ok)
		}
	}
}
