package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/origin"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

// originFixture: an upstream origin (a second HTTP server in the test,
// counting its hits), and a TFTP server and a mirror both serving its
// files through one origin cache, as cmd/mtftpd wires them.
type originFixture struct {
	hits     atomic.Int64
	truncate atomic.Int64                  // the next N answers are cut halfway
	gate     atomic.Pointer[chan struct{}] // set while the origin's handler runs: atomic
	data     []byte
	cache    *origin.Cache
	http     string
	tftpAddr string
}

func newOriginFixture(t *testing.T, size int, opts ...func(*origin.Cache)) *originFixture {
	t.Helper()
	f := &originFixture{data: make([]byte, size)}
	rand.NewChaCha8([32]byte{7}).Read(f.data)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		if g := f.gate.Load(); g != nil {
			<-*g
		}
		if r.URL.Path != "/boot/images/install.img" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
		w.Header().Set("ETag", `"v1-install"`)
		if f.truncate.Add(-1) >= 0 {
			w.Write(f.data[:len(f.data)/2])
			return
		}
		w.Write(f.data)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL + "/boot/")
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	f.cache = &origin.Cache{URL: u, Dir: t.TempDir(), TTL: time.Hour, Log: log}
	for _, o := range opts {
		o(f.cache) // before anything serves: the cache's fields are not for changing under it
	}
	if err := f.cache.Open(); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(f.cache.FilesDir())
	if err != nil {
		t.Fatal(err)
	}
	store.SetSource(f.cache)

	ctx, cancel := context.WithCancel(context.Background())
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts := &tftp.Server{Files: store, Log: log}
	tftpDone := make(chan error, 1)
	go func() { tftpDone <- ts.Serve(ctx, pc) }()
	f.tftpAddr = pc.LocalAddr().String()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := &Server{Root: f.cache.FilesDir(), Source: f.cache, Log: log}
	webDone := make(chan error, 1)
	go func() { webDone <- web.Serve(ctx, ln) }()
	f.http = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		cancel()
		<-webDone
		if err := <-tftpDone; err != nil && !errors.Is(err, tftp.ErrServerClosed) {
			t.Errorf("tftp: %v", err)
		}
		store.Close()
		f.cache.Close()
	})
	return f
}

func (f *originFixture) tftpGet(name string) ([]byte, error) {
	var buf bytes.Buffer
	c := &tftp.Client{BlockSize: 1468, WindowSize: 16}
	_, err := c.Get(context.Background(), f.tftpAddr, name, &buf)
	return buf.Bytes(), err
}

// curlGet fetches url with curl and returns the body's sha256 and status.
func curlGet(url string) ([32]byte, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", "-sS", "-w", "\n%{http_code}", url).Output()
	if err != nil {
		return [32]byte{}, 0, err
	}
	i := bytes.LastIndexByte(out, '\n')
	code, _ := strconv.Atoi(string(out[i+1:]))
	return sha256.Sum256(out[:i]), code, nil
}

// TestOriginTwentyFirstRequests: 10 TFTP and 10 HTTP (curl) clients ask
// for a file nobody has fetched yet, all at once: the origin is asked
// once, every client gets the whole file.
func TestOriginTwentyFirstRequests(t *testing.T) {
	testutil.Tool(t, "curl")
	f := newOriginFixture(t, 2<<20+333)
	gate := make(chan struct{})
	f.gate.Store(&gate)
	want := sha256.Sum256(f.data)
	errs := make(chan error, 20)
	for range 10 {
		go func() {
			b, err := f.tftpGet("images/install.img")
			if err == nil && sha256.Sum256(b) != want {
				err = errors.New("tftp: bytes differ")
			}
			errs <- err
		}()
		go func() {
			sum, code, err := curlGet(f.http + "/images/install.img")
			if err == nil && (code != 200 || sum != want) {
				err = errors.New("http: status " + strconv.Itoa(code) + " or bytes differ")
			}
			errs <- err
		}()
	}
	// Hold the origin's answer until all 20 wait on the one fetch
	// (bounded; the counts below say so if they never do).
	for i := 0; i < 2000 && f.cache.Counters.Joined.Load() < 19; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	close(gate)
	for range 20 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if h := f.hits.Load(); h != 1 {
		t.Errorf("origin hits: %d, want 1", h)
	}
	if j := f.cache.Counters.Joined.Load(); j != 19 {
		t.Errorf("%d requests joined the first fetch, want 19", j)
	}
}

// TestOriginTruncated: a cut origin response is refused (HTTP 502, TFTP
// ERROR), nothing is cached, and the next request fetches it whole.
func TestOriginTruncated(t *testing.T) {
	f := newOriginFixture(t, 1<<20)
	f.cache.NegativeTTL = -1 // each request asks again (failures are not remembered)
	f.truncate.Store(2)
	_, h := curl(t, f.http+"/images/install.img")
	if !strings.Contains(h, "502") {
		t.Errorf("truncated origin answer over HTTP: %s", h)
	}
	var re *tftp.RemoteError
	if _, err := f.tftpGet("images/install.img"); !errors.As(err, &re) {
		t.Errorf("truncated origin answer over TFTP: %v, want an ERROR", err)
	}
	if m, _ := filepath.Glob(filepath.Join(f.cache.FilesDir(), "*", "*")); len(m) != 0 {
		t.Errorf("cached after refused fetches: %v", m)
	}
	b, err := f.tftpGet("images/install.img")
	if err != nil || !bytes.Equal(b, f.data) {
		t.Fatalf("retry over TFTP: %d bytes, %v", len(b), err)
	}
	if body, _ := curl(t, f.http+"/images/install.img"); body != string(f.data) {
		t.Fatalf("HTTP after the retry: %d bytes", len(body))
	}
	if h := f.hits.Load(); h != 3 {
		t.Errorf("origin hits: %d, want 3 (two cut, one whole)", h)
	}
	if _, h := curl(t, f.http+"/images/missing.img"); !strings.Contains(h, "404") {
		t.Errorf("missing on the origin: %s", h)
	}
}

// TestOriginWait504: a request that outwaits origin.wait gets 504 with
// Retry-After while the fetch goes on; the retry gets the file from the
// one fetch (issue 13 finding 12).
func TestOriginWait504(t *testing.T) {
	f := newOriginFixture(t, 1<<20, func(c *origin.Cache) { c.Wait = 50 * time.Millisecond })
	gate := make(chan struct{})
	f.gate.Store(&gate)
	_, h := curl(t, f.http+"/images/install.img")
	if !strings.Contains(h, "504") || header(h, "Retry-After") == "" {
		t.Fatalf("a request outwaiting origin.wait: %s", h)
	}
	close(gate)
	// The retry waits (50 ms each) until the fetch that went on is done.
	var body string
	for range 100 {
		if body, h = curl(t, f.http+"/images/install.img"); !strings.Contains(h, "504") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body != string(f.data) {
		t.Fatalf("retry: %d bytes\n%s", len(body), h)
	}
	if n := f.hits.Load(); n != 1 {
		t.Fatalf("origin hits %d, want 1 (the fetch went on)", n)
	}
}
