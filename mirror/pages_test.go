package mirror

import (
	"context"
	"io"
	"net"
	"net/http"
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
