package mirror

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

func startMirror(t *testing.T, root string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: root}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func curl(t *testing.T, args ...string) (string, string) {
	t.Helper()
	p := testutil.Tool(t, "curl")
	hdr := filepath.Join(t.TempDir(), "h")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, append([]string{"-sS", "-D", hdr}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	h, _ := os.ReadFile(hdr)
	return string(out), string(h)
}

// TestRangeAndConditional checks with curl what an installer relies on:
// full GET, byte ranges, If-Modified-Since and If-None-Match, HEAD.
func TestRangeAndConditional(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 1<<20+123)
	rand.NewChaCha8([32]byte{1}).Read(data)
	os.MkdirAll(filepath.Join(root, "os", "images"), 0o755)
	os.WriteFile(filepath.Join(root, "os", "images", "install.img"), data, 0o644)
	os.WriteFile(filepath.Join(root, "ks.cfg"), []byte("text\nreboot\n"), 0o644)
	base := startMirror(t, root)

	body, h := curl(t, base+"/os/images/install.img")
	if sha256.Sum256([]byte(body)) != sha256.Sum256(data) || !strings.Contains(h, "200 OK") {
		t.Fatalf("full GET: %d bytes\n%s", len(body), h)
	}
	body, h = curl(t, "-r", "1000-1999", base+"/os/images/install.img")
	if !strings.Contains(h, "206 Partial Content") || body != string(data[1000:2000]) {
		t.Fatalf("range: %d bytes\n%s", len(body), h)
	}
	body, h = curl(t, "-r", "-100", base+"/os/images/install.img")
	if body != string(data[len(data)-100:]) {
		t.Fatalf("suffix range: %d bytes\n%s", len(body), h)
	}
	etag := ""
	for _, l := range strings.Split(h, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "etag:") {
			etag = strings.TrimSpace(l[5:])
		}
	}
	if etag == "" {
		t.Fatalf("no ETag:\n%s", h)
	}
	_, h = curl(t, "-H", "If-None-Match: "+etag, base+"/os/images/install.img")
	if !strings.Contains(h, "304 Not Modified") {
		t.Fatalf("If-None-Match: %s", h)
	}
	_, h = curl(t, "-z", time.Now().Add(time.Hour).UTC().Format(time.RFC1123), base+"/ks.cfg")
	if !strings.Contains(h, "304 Not Modified") {
		t.Fatalf("If-Modified-Since: %s", h)
	}
	body, h = curl(t, "-I", base+"/ks.cfg")
	if body != "" && !strings.Contains(h, "Content-Length: 12") {
		t.Fatalf("HEAD: %q %s", body, h)
	}
	body, _ = curl(t, base+"/os/")
	if !strings.Contains(body, `href="./images/"`) {
		t.Fatalf("listing: %s", body)
	}
	_, h = curl(t, base+"/os")
	if !strings.Contains(h, "301") || !strings.Contains(h, "Location: ./os/") {
		t.Fatalf("directory without slash: %s", h)
	}
	_, h = curl(t, "--path-as-is", base+"//os")
	if strings.Contains(h, "Location: //") {
		t.Fatalf("protocol-relative redirect (open redirect): %s", h)
	}
	if !strings.Contains(h, "X-Content-Type-Options: nosniff") {
		t.Fatalf("no nosniff header: %s", h)
	}
}

// TestShutdownBeforeServe: a Shutdown that comes first (a signal during
// start-up) makes Serve return instead of being lost.
func TestShutdownBeforeServe(t *testing.T) {
	s := &Server{Root: t.TempDir()}
	s.Shutdown(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Shutdown kept serving")
	}
}

// TestJail: the same jail rules as TFTP.
func TestJail(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	os.MkdirAll(root, 0o755)
	os.WriteFile(filepath.Join(parent, "secret"), []byte("secret"), 0o644)
	os.Symlink("../secret", filepath.Join(root, "out"))
	os.Symlink("/etc/passwd", filepath.Join(root, "abs"))
	testutil.Mkfifo(filepath.Join(root, "fifo"))
	os.WriteFile(filepath.Join(root, "ok"), []byte("fine"), 0o644)
	base := startMirror(t, root)
	for _, p := range []string{"/../secret", "/%2e%2e/secret", "/out", "/abs", "/fifo", "/a/../../secret"} {
		body, h := curl(t, "--path-as-is", base+p)
		if strings.Contains(body, "secret") && !strings.Contains(body, "Forbidden") && !strings.Contains(body, "Not Found") || strings.Contains(h, "200 OK") {
			t.Errorf("%s: served\n%s%s", p, h, body)
		}
	}
	if body, _ := curl(t, base+"/ok"); body != "fine" {
		t.Fatalf("ok: %q", body)
	}
	// A file name that is a URL scheme stays a relative link.
	os.WriteFile(filepath.Join(root, "javascript:alert(1)"), nil, 0o644)
	if body, _ := curl(t, base+"/"); strings.Contains(body, `href="javascript:`) {
		t.Fatalf("listing links a javascript: URL:\n%s", body)
	}
}

// TestIfRange: a resumed download (If-Range with the validator it got
// first) gets the rest; a changed file (stale validator) gets the whole
// new file instead of a splice of two versions.
func TestIfRange(t *testing.T) {
	root := t.TempDir()
	img := filepath.Join(root, "disk.img")
	os.WriteFile(img, []byte("0123456789abcdefghij"), 0o644)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(img, old, old)
	base := startMirror(t, root)

	_, h := curl(t, "-I", base+"/disk.img")
	etag := header(h, "ETag")
	lastMod := header(h, "Last-Modified")
	if etag == "" || lastMod == "" {
		t.Fatalf("no validators:\n%s", h)
	}
	for _, v := range []string{etag, lastMod} {
		body, h := curl(t, "-r", "10-", "-H", "If-Range: "+v, base+"/disk.img")
		if !strings.Contains(h, "206 Partial Content") || body != "abcdefghij" {
			t.Errorf("If-Range %s (current): %q\n%s", v, body, h)
		}
	}
	os.WriteFile(img, []byte("NEW CONTENT, longer than before"), 0o644)
	for _, v := range []string{etag, lastMod} {
		body, h := curl(t, "-r", "10-", "-H", "If-Range: "+v, base+"/disk.img")
		if !strings.Contains(h, "200 OK") || body != "NEW CONTENT, longer than before" {
			t.Errorf("If-Range %s (stale): want the whole new file, got %q\n%s", v, body, h)
		}
	}
	// A validator that still matches but a range past the end: 416.
	_, h = curl(t, "-I", base+"/disk.img")
	if _, h2 := curl(t, "-r", "1000-", "-H", "If-Range: "+header(h, "ETag"), base+"/disk.img"); !strings.Contains(h2, "416") {
		t.Errorf("range past the end: %s", h2)
	}
}

// TestListing: names are escaped, dotfiles are not listed (but served),
// and a listing never links out of the root.
func TestListing(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, `<script>alert("x")<\script>`), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, ".treeinfo"), []byte("[general]\n"), 0o644)
	os.MkdirAll(filepath.Join(root, ".git"), 0o755)
	os.MkdirAll(filepath.Join(root, "sub dir"), 0o755)
	os.WriteFile(filepath.Join(root, "sub dir", "a&b.rpm"), []byte("rpm"), 0o644)
	base := startMirror(t, root)

	body, h := curl(t, base+"/")
	if !strings.Contains(h, "text/html") {
		t.Fatalf("listing content type:\n%s", h)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("name not escaped:\n%s", body)
	}
	if strings.Contains(body, ".treeinfo") || strings.Contains(body, ".git") {
		t.Errorf("dotfiles listed:\n%s", body)
	}
	if strings.Contains(body, `href="../"`) {
		t.Errorf("the root's listing links to its parent:\n%s", body)
	}
	if got, _ := curl(t, base+"/.treeinfo"); got != "[general]\n" {
		t.Errorf(".treeinfo not served: %q", got)
	}
	body, _ = curl(t, base+"/sub%20dir/")
	if !strings.Contains(body, `href="./a&amp;b.rpm"`) || !strings.Contains(body, `href="../"`) {
		t.Errorf("sub listing:\n%s", body)
	}
	if got, _ := curl(t, base+"/sub%20dir/a&b.rpm"); got != "rpm" {
		t.Errorf("a&b.rpm: %q", got)
	}
}

// header returns the value of the first header line called name.
func header(h, name string) string {
	for _, l := range strings.Split(h, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// readFromRecorder is a ResponseWriter with ReadFrom (as net/http's is)
// that records what it was handed.
type readFromRecorder struct {
	http.ResponseWriter
	got []io.Reader
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.got = append(r.got, src)
	return io.Copy(io.Discard, src)
}

// TestSendfilePath pins the two things sendfile needs: the connection
// keeps *net.TCPConn's ReadFrom under the connection cap, and the file
// reaches it under exactly one io.LimitedReader (net.TCPConn unwraps one).
func TestSendfilePath(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "img")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 9<<20+5))
	f.Seek(0, io.SeekStart)
	rec := &readFromRecorder{ResponseWriter: httptest.NewRecorder()}
	cw := &countingWriter{ResponseWriter: rec}
	if n, err := io.CopyN(cw, f, 9<<20+5); err != nil || n != 9<<20+5 || cw.n != n {
		t.Fatalf("CopyN: %d, %v (counted %d)", n, err, cw.n)
	}
	if len(rec.got) != 3 {
		t.Errorf("%d ReadFrom calls for 9 MiB, want 3 slices of at most 4 MiB", len(rec.got))
	}
	for _, r := range rec.got {
		if lr, ok := r.(*io.LimitedReader); !ok || lr.R != io.Reader(f) {
			t.Fatalf("ReadFrom got %T, want an *io.LimitedReader directly over the *os.File", r)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ll := newConnLimiter(ln, 1, 1, &Counters{})
	go func() {
		for range 2 {
			if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				defer c.Close()
			}
		}
	}()
	c, err := ll.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Fatalf("accepted %T: no ReadFrom, so no sendfile", c)
	}
	ll.connState(c, http.StateActive) // busy: not to be shed
	second := make(chan net.Conn, 1)
	go func() {
		c, _ := ll.Accept()
		second <- c
	}()
	select {
	case <-second:
		t.Fatal("a second connection accepted over a cap of 1")
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	c.Close() // releases once
	if c2 := <-second; c2 == nil {
		t.Fatal("no second connection after the first closed")
	} else {
		c2.Close()
	}
}
