package origin

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
)

// originServer is the upstream in the test: files by path, a hit counter,
// and switches for misbehaviour.
type originServer struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	etags    map[string]string // override; default "size-version"
	version  int
	hits     atomic.Int64
	cond     atomic.Int64 // requests carrying If-None-Match
	truncate atomic.Int64 // the next N answers stop halfway
	gate     chan struct{}
}

func newOrigin(t *testing.T) *originServer {
	o := &originServer{files: map[string][]byte{}, etags: map[string]string{}}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.Close)
	return o
}

func (o *originServer) put(name string, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.files[name] = data
	o.version++
}

func (o *originServer) serve(w http.ResponseWriter, r *http.Request) {
	o.hits.Add(1)
	if o.gate != nil {
		<-o.gate
	}
	name := r.URL.Path[1:]
	if name == "dir" {
		http.Redirect(w, r, "/dir/", http.StatusMovedPermanently)
		return
	}
	o.mu.Lock()
	data, ok := o.files[name]
	etag := o.etags[name]
	if etag == "" {
		etag = fmt.Sprintf(`"%x-%d"`, len(data), o.version)
	}
	o.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		o.cond.Add(1)
		if inm == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("ETag", etag)
	if strings.HasPrefix(name, "ks/") {
		w.Header().Set("Cache-Control", "no-store") // as mtftpd sends rendered templates
	}
	w.Header().Set("Last-Modified", "Tue, 24 Nov 2026 10:00:00 GMT")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if o.truncate.Add(-1) >= 0 {
		w.Write(data[:len(data)/2]) // then the handler returns: the connection is cut
		return
	}
	w.Write(data)
}

func newCache(t *testing.T, o *originServer, ttl time.Duration, dir string) *Cache {
	t.Helper()
	u, _ := url.Parse(o.URL + "/base/")
	// The test origin serves under /: strip /base/ to check the URL join.
	u.Path = "/"
	c := &Cache{URL: u, Dir: dir, TTL: ttl, Log: zerolog.New(zerolog.NewTestWriter(t))}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func cached(t *testing.T, c *Cache, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.FilesDir(), name))
	if err != nil {
		t.Fatalf("cached %s: %v", name, err)
	}
	return b
}

// noLeftovers: nothing in tmp/, and name absent from files/.
func noLeftovers(t *testing.T, c *Cache, name string) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(c.Dir, tmpDir)); len(ents) != 0 {
		t.Errorf("temp files left: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(c.FilesDir(), name)); err == nil {
		t.Errorf("%s is in the cache after a refused fetch", name)
	}
}

// TestConcurrentFirstRequestsFetchOnce: 20 requests for a file not yet
// cached wait on one fetch; the origin sees one GET.
func TestConcurrentFirstRequestsFetchOnce(t *testing.T) {
	o := newOrigin(t)
	data := randomBytes(3<<20+5, 1)
	o.put("images/vmlinuz", data)
	o.gate = make(chan struct{})
	c := newCache(t, o, time.Hour, t.TempDir())
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() { errs <- c.Ensure("images/vmlinuz") }()
	}
	// Hold the origin's answer until the other 19 have joined the flight
	// (bounded: the assertion below reports it if they never do).
	for i := 0; i < 1000 && c.Counters.Joined.Load() < n-1; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	close(o.gate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := o.hits.Load(); got != 1 {
		t.Fatalf("origin hits: %d, want 1", got)
	}
	if j := c.Counters.Joined.Load(); j != n-1 {
		t.Errorf("joined: %d, want %d", j, n-1)
	}
	if !bytes.Equal(cached(t, c, "images/vmlinuz"), data) {
		t.Fatal("cached bytes differ from the origin's")
	}
	for range n {
		if err := c.Ensure("images/vmlinuz"); err != nil {
			t.Fatal(err)
		}
	}
	if o.hits.Load() != 1 || c.Counters.Hits.Load() != n {
		t.Errorf("after caching: origin hits %d, cache hits %d", o.hits.Load(), c.Counters.Hits.Load())
	}
}

// TestTruncatedBodyRefusedThenRetried: a body cut short of Content-Length
// leaves nothing in the cache; the next request fetches again.
func TestTruncatedBodyRefusedThenRetried(t *testing.T) {
	o := newOrigin(t)
	data := randomBytes(1<<20, 2)
	o.put("initrd.img", data)
	o.truncate.Store(1)
	c := newCache(t, o, time.Hour, t.TempDir())
	err := c.Ensure("initrd.img")
	if err == nil || errors.Is(err, filestore.ErrNotFound) {
		t.Fatalf("truncated body: %v, want a fetch error", err)
	}
	noLeftovers(t, c, "initrd.img")
	// Remembered for NegativeTTL: no second GET of a body that was cut.
	if err2 := c.Ensure("initrd.img"); err2 == nil || err2.Error() != err.Error() || o.hits.Load() != 1 {
		t.Fatalf("within NegativeTTL: %v, %d origin hits; want the same error and no GET", err2, o.hits.Load())
	}
	c.mu.Lock()
	c.entries["initrd.img"].Checked = time.Time{} // NegativeTTL has passed
	c.mu.Unlock()
	if err := c.Ensure("initrd.img"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !bytes.Equal(cached(t, c, "initrd.img"), data) || o.hits.Load() != 2 || c.Counters.Refused.Load() != 1 {
		t.Fatalf("after retry: hits %d refused %d", o.hits.Load(), c.Counters.Refused.Load())
	}
}

// TestMD5ETag: an S3-style ETag (the body's MD5) is checked.
func TestMD5ETag(t *testing.T) {
	o := newOrigin(t)
	data := []byte("kernel bytes")
	o.put("good", data)
	o.put("bad", data)
	o.etags["good"] = fmt.Sprintf(`"%x"`, md5.Sum(data))
	o.etags["bad"] = fmt.Sprintf(`"%x"`, md5.Sum([]byte("other bytes")))
	c := newCache(t, o, time.Hour, t.TempDir())
	if err := c.Ensure("good"); err != nil {
		t.Fatal(err)
	}
	if err := c.Ensure("bad"); err == nil {
		t.Fatal("an MD5 mismatch was accepted")
	}
	noLeftovers(t, c, "bad")
}

// TestRevalidation: past the TTL a conditional GET keeps (304) or replaces
// (200) the copy; 404 removes it; an unreachable origin leaves the copy
// served; after a restart the validators on disk are used.
func TestRevalidation(t *testing.T) {
	o := newOrigin(t)
	o.put("pxelinux.0", []byte("v1"))
	dir := t.TempDir()
	c := newCache(t, o, -1, dir) // revalidate on every request
	for range 2 {
		if err := c.Ensure("pxelinux.0"); err != nil {
			t.Fatal(err)
		}
	}
	if o.cond.Load() != 1 || c.Counters.NotModified.Load() != 1 {
		t.Fatalf("second request: %d conditional, %d not modified", o.cond.Load(), c.Counters.NotModified.Load())
	}
	o.put("pxelinux.0", []byte("version 2"))
	if err := c.Ensure("pxelinux.0"); err != nil || string(cached(t, c, "pxelinux.0")) != "version 2" {
		t.Fatalf("changed on the origin: %v %q", err, cached(t, c, "pxelinux.0"))
	}
	st, _ := os.Stat(filepath.Join(c.FilesDir(), "pxelinux.0"))
	if want := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC); !st.ModTime().Equal(want) {
		t.Errorf("mtime %v, want the origin's Last-Modified %v", st.ModTime(), want)
	}

	// A restart: validators come from meta/, the copy is not fetched again.
	c2 := newCache(t, o, -1, dir)
	cond := o.cond.Load()
	if err := c2.Ensure("pxelinux.0"); err != nil || o.cond.Load() != cond+1 || c2.Counters.NotModified.Load() != 1 {
		t.Fatalf("after restart: %v, conditional %d→%d", err, cond, o.cond.Load())
	}

	o.mu.Lock()
	delete(o.files, "pxelinux.0")
	o.mu.Unlock()
	if err := c.Ensure("pxelinux.0"); !errors.Is(err, filestore.ErrNotFound) {
		t.Fatalf("deleted on the origin: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.FilesDir(), "pxelinux.0")); err == nil {
		t.Fatal("a file the origin deleted is still cached")
	}

	o.put("ldlinux.c32", []byte("ldlinux"))
	if err := c.Ensure("ldlinux.c32"); err != nil {
		t.Fatal(err)
	}
	o.Close() // the origin goes away
	if err := c.Ensure("ldlinux.c32"); err != nil || c.Counters.Stale.Load() != 1 {
		t.Fatalf("origin down: %v, stale %d; want the cached copy", err, c.Counters.Stale.Load())
	}
}

// TestMissingAndDirectories: a 404 is remembered briefly (pxelinux probes
// many names); a name the origin redirects to a directory is refused.
func TestMissingAndDirectories(t *testing.T) {
	o := newOrigin(t)
	c := newCache(t, o, time.Hour, t.TempDir())
	for range 3 {
		if err := c.Ensure("pxelinux.cfg/C0000201"); !errors.Is(err, filestore.ErrNotFound) {
			t.Fatalf("missing: %v", err)
		}
	}
	if o.hits.Load() != 1 {
		t.Errorf("3 requests for a missing file: %d origin hits, want 1", o.hits.Load())
	}
	if err := c.Ensure("dir"); !errors.Is(err, filestore.ErrAccess) {
		t.Fatalf("directory: %v, want ErrAccess", err)
	}
	noLeftovers(t, c, "dir")
}

// TestFilestoreSource: through filestore.Store, as TFTP uses it.
func TestFilestoreSource(t *testing.T) {
	o := newOrigin(t)
	o.put("boot/grub x64.efi", []byte("grub"))
	c := newCache(t, o, time.Hour, t.TempDir())
	st, err := filestore.Open(c.FilesDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetSource(c)
	f, err := st.Get(`\boot\grub x64.efi`)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Release()
	if string(f.Data()) != "grub" {
		t.Fatalf("data %q", f.Data())
	}
	if _, err := st.Get("nope"); !errors.Is(err, filestore.ErrNotFound) {
		t.Fatalf("missing through the store: %v", err)
	}
}

// TestNoStore: a file the origin marks no-store is fetched on every
// request (an origin's per-host file must not be frozen in a rack).
func TestNoStore(t *testing.T) {
	o := newOrigin(t)
	o.put("ks/52:54:00:00:00:01.cfg", []byte("text\n"))
	c := newCache(t, o, time.Hour, t.TempDir())
	for range 2 {
		if err := c.Ensure("ks/52:54:00:00:00:01.cfg"); err != nil {
			t.Fatal(err)
		}
	}
	if o.hits.Load() != 2 {
		t.Fatalf("origin hits %d, want 2", o.hits.Load())
	}
}
