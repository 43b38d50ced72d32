package mirror

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// startDualStack serves s on one [::] listener (docs/design.md, "IPv6")
// and returns its port.
func startDualStack(t *testing.T, s *Server) int {
	t.Helper()
	ln, err := net.Listen(listenNetwork("[::]:0"), "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// TestIPv6GetAndRange: curl over http://[::1]:port/ gets a whole file and
// a byte range, and the same [::] listener serves 127.0.0.1.
func TestIPv6GetAndRange(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 1<<20+77)
	rand.NewChaCha8([32]byte{6}).Read(data)
	os.WriteFile(filepath.Join(root, "install.img"), data, 0o644)
	port := startDualStack(t, &Server{Root: root})
	for _, base := range []string{fmt.Sprintf("http://[::1]:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port)} {
		body, h := curl(t, base+"/install.img")
		if sha256.Sum256([]byte(body)) != sha256.Sum256(data) || !strings.Contains(h, "200 OK") {
			t.Fatalf("%s full GET: %d bytes\n%s", base, len(body), h)
		}
		body, h = curl(t, "-r", "4096-8191", base+"/install.img")
		if !strings.Contains(h, "206 Partial Content") || body != string(data[4096:8192]) {
			t.Fatalf("%s range: %d bytes\n%s", base, len(body), h)
		}
	}
}

// TestListenNetworkFamilies: 0.0.0.0 is IPv4 only (Go's plain "tcp"
// would make it dual-stack), [::1] IPv6 only.
func TestListenNetworkFamilies(t *testing.T) {
	for _, c := range []struct{ listen, dial string }{{"0.0.0.0:0", "::1"}, {"[::1]:0", "127.0.0.1"}} {
		ln, err := net.Listen(listenNetwork(c.listen), c.listen)
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if conn, err := net.Dial("tcp", net.JoinHostPort(c.dial, strconv.Itoa(port))); err == nil {
			conn.Close()
			ln.Close()
			t.Fatalf("a listener on %s accepted a connection to %s", c.listen, c.dial)
		}
		ln.Close()
	}
}

// TestDualStackPerAddress: on a dual-stack listener the IPv4 client is
// counted and matched as 127.0.0.1, not ::ffff:127.0.0.1: its third
// connection gets 503 at max_conns_per_ip 2 while ::1 is still served,
// and http.api_allow 127.0.0.1/32 lets it (and not ::1) read /metrics.
func TestDualStackPerAddress(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "ks.cfg"), []byte("text\n"), 0o644)
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	s := &Server{Root: root, MaxConnsPerIP: 2, PagesAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Pages: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/slow" {
				entered <- struct{}{}
				<-release
			}
			io.WriteString(w, "ok\n")
		})}
	port := startDualStack(t, s)
	v4, v6 := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("[::1]:%d", port)
	status := func(addr, path string) int {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET %s from %s: %v", path, addr, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(v4, "/metrics"); got != http.StatusOK {
		t.Errorf("/metrics from 127.0.0.1 in api_allow: %d, want 200", got)
	}
	if got := status(v6, "/metrics"); got != http.StatusForbidden {
		t.Errorf("/metrics from ::1 outside api_allow: %d, want 403", got)
	}
	var busy []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", v4)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /api/slow HTTP/1.1\r\nHost: %s\r\n\r\n", v4)
		busy = append(busy, c)
	}
	<-entered
	<-entered
	if got := status(v4, "/ks.cfg"); got != http.StatusServiceUnavailable || s.Counters.ConnsRefused.Load() != 1 {
		t.Errorf("third connection from busy 127.0.0.1: %d, refused %d; want 503, 1", got, s.Counters.ConnsRefused.Load())
	}
	if got := status(v6, "/ks.cfg"); got != http.StatusOK {
		t.Errorf("::1 while 127.0.0.1 is busy: %d, want 200", got)
	}
	close(release)
	for _, c := range busy {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a busy connection's request: %v %v", resp, err)
		}
	}
}

// TestTemplateHTTPBaseIPv6: {{.HTTP}} in a file served over TFTP brackets
// an IPv6 literal (RFC 3986 §3.2.2), drops its zone and unmaps v4-mapped
// addresses.
func TestTemplateHTTPBaseIPv6(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "base.txt"), []byte("{{.HTTP}}"), 0o644)
	client := netip.MustParseAddrPort("[2001:db8::77]:2000")
	for _, c := range []struct {
		local string
		port  int
		want  string
	}{
		{"2001:db8::5", 0, "http://[2001:db8::5]"},
		{"2001:db8::5", 80, "http://[2001:db8::5]"},
		{"2001:db8::5", 8080, "http://[2001:db8::5]:8080"},
		{"fe80::5%2", 8080, "http://[fe80::5]:8080"},
		{"::ffff:192.0.2.5", 8080, "http://192.0.2.5:8080"},
		{"192.0.2.5", 80, "http://192.0.2.5"},
	} {
		tm := &Templates{Dir: dir, HTTPPort: c.port, Log: zerolog.Nop()}
		if err := tm.Open(); err != nil {
			t.Fatal(err)
		}
		got, ok, err := tm.Render("base.txt", client, netip.MustParseAddr(c.local))
		tm.Close()
		if err != nil || !ok || string(got) != c.want {
			t.Errorf("local %s port %d: %q %v %v, want %q", c.local, c.port, got, ok, err, c.want)
		}
	}
}
