package mirror

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// startPagesMirror serves a root with one file and a stand-in /metrics.
func startPagesMirror(t *testing.T, configure func(*Server)) (*Server, string) {
	t.Helper()
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "ks.cfg"), []byte("text\nreboot\n"), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: root, Pages: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "mtftpd_http_requests_total 1\n")
	})}
	if configure != nil {
		configure(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, ln.Addr().String()
}

// idleConn opens a keep-alive connection from src, makes one request on
// it and reads the answer: the connection is then idle, as a browser's
// or a flooder's. The caller closes it.
func idleConn(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /ks.cfg HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request on connection from %s: %v", src, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c
}

// scrapeFrom GETs /metrics from src. The client's timeout only turns a
// hang (the old behaviour: the connection waits in the listen backlog
// for a slot that never frees) into a failure; nothing asserts a time.
func scrapeFrom(t *testing.T, src, addr string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("/metrics from %s: %v", src, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics from %s: %s %q", src, resp.Status, b)
	}
}

// TestIdleConnsOneAddress is the attack of issue 13 finding 7: one client
// opens 2,048 keep-alive connections (DefaultMaxConns) and leaves them
// idle. Before, they held every slot and /metrics timed out. Now the
// address keeps at most DefaultMaxConnsPerIP: each connection past that
// closes its own oldest idle one, and another client is served.
func TestIdleConnsOneAddress(t *testing.T) {
	s, addr := startPagesMirror(t, nil)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range DefaultMaxConns {
		conns = append(conns, idleConn(t, "127.0.0.1", addr))
	}
	scrapeFrom(t, "127.0.0.2", addr)
	shed, refused := s.Counters.ConnsShed.Load(), s.Counters.ConnsRefused.Load()
	t.Logf("2,048 idle connections from one address: %d shed, %d refused; /metrics from another answered", shed, refused)
	if shed != DefaultMaxConns-DefaultMaxConnsPerIP || refused != 0 {
		t.Fatalf("shed %d, refused %d: want %d shed (one per connection past %d)", shed, refused, DefaultMaxConns-DefaultMaxConnsPerIP, DefaultMaxConnsPerIP)
	}
	// A connection still open is one of the newest 64 and still works.
	c := conns[len(conns)-1]
	fmt.Fprintf(c, "GET /ks.cfg HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the newest idle connection: %v %v", resp, err)
	}
	// The oldest was closed by the server.
	conns[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := conns[0].Read(make([]byte, 1)); err == nil {
		t.Fatalf("the oldest idle connection is still open (%d bytes read)", n)
	}
}

// TestIdleConnsManyAddresses: 2,048 idle connections spread over 128
// addresses (16 each, under the per-address cap) fill MaxConns; a new
// client still gets /metrics, because the oldest idle connection makes
// room. A connection serving a request is never shed: with every slot
// busy, Accept waits.
func TestIdleConnsManyAddresses(t *testing.T) {
	s, addr := startPagesMirror(t, nil)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range DefaultMaxConns {
		conns = append(conns, idleConn(t, fmt.Sprintf("127.1.%d.%d", i/16/250, 1+(i/16)%250), addr))
	}
	if n := s.Counters.ConnsShed.Load(); n != 0 {
		t.Fatalf("%d shed below the cap", n)
	}
	scrapeFrom(t, "127.0.0.2", addr)
	if n := s.Counters.ConnsShed.Load(); n != 1 {
		t.Fatalf("%d shed for one connection at the cap, want 1", n)
	}
	conns[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("the oldest idle connection was not the one shed")
	}
}

// TestBusyAddressRefused: an address whose connections are all serving
// requests gets 503 for one more, and its requests in flight finish.
func TestBusyAddressRefused(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	s, addr := startPagesMirror(t, func(s *Server) {
		s.MaxConnsPerIP = 2
		s.Pages = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-release
			io.WriteString(w, "ok\n")
		})
	})
	var busy []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		busy = append(busy, c)
	}
	<-entered
	<-entered // both requests are being served
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /ks.cfg HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || s.Counters.ConnsRefused.Load() != 1 {
		t.Fatalf("third connection from a busy address: %v, refused %d", resp, s.Counters.ConnsRefused.Load())
	}
	close(release)
	for _, c := range busy {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a busy connection's request: %v %v", resp, err)
		}
	}
}
