package origin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
)

// memOrigin is an origin in memory, as an http.RoundTripper: the bounds
// tests run in a synctest bubble (virtual time: the TTLs and the wait
// pass without sleeping), where a real socket would not count as
// blocked.
type memOrigin struct {
	mu      sync.Mutex
	files   map[string][]byte
	status  map[string]int           // answer this status instead
	gates   map[string]chan struct{} // hold the answer until closed
	chunked map[string]bool          // no Content-Length
	gets    atomic.Int64
}

func newMemOrigin() *memOrigin {
	return &memOrigin{files: map[string][]byte{}, status: map[string]int{}, gates: map[string]chan struct{}{}, chunked: map[string]bool{}}
}

func (o *memOrigin) RoundTrip(r *http.Request) (*http.Response, error) {
	o.gets.Add(1)
	name := strings.TrimPrefix(r.URL.Path, "/")
	o.mu.Lock()
	data, ok := o.files[name]
	code := o.status[name]
	gate := o.gates[name]
	chunked := o.chunked[name]
	o.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r, Body: io.NopCloser(bytes.NewReader(data)), ContentLength: int64(len(data))}
	switch {
	case code != 0:
		resp.StatusCode, resp.Body, resp.ContentLength = code, io.NopCloser(strings.NewReader("no")), 2
	case !ok:
		resp.StatusCode, resp.Body, resp.ContentLength = http.StatusNotFound, io.NopCloser(strings.NewReader("")), 0
	case chunked:
		resp.ContentLength = -1
	default:
		resp.Header.Set("Content-Length", strconv.Itoa(len(data)))
	}
	resp.Status = http.StatusText(resp.StatusCode)
	return resp, nil
}

func memCache(t *testing.T, o *memOrigin, dir string, configure func(*Cache)) *Cache {
	t.Helper()
	u, _ := url.Parse("http://origin.test/")
	c := &Cache{URL: u, Dir: dir, TTL: time.Hour, Client: &http.Client{Transport: o}, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}
	if configure != nil {
		configure(c)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestFailuresRemembered is the first attack of issue 13 finding 12:
// every request for a name whose fetch fails (here a 500 from the origin,
// as for a cut multi-gigabyte body) was a new GET. Now the failure is
// answered from memory for NegativeTTL, then asked again.
func TestFailuresRemembered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := newMemOrigin()
		o.status["images/broken.img"] = http.StatusInternalServerError
		c := memCache(t, o, t.TempDir(), nil)
		for range 100 {
			if err := c.Ensure("images/broken.img"); err == nil || errors.Is(err, filestore.ErrNotFound) {
				t.Fatalf("a failing fetch: %v", err)
			}
		}
		t.Logf("100 requests for a failing name: %d origin GETs, %d answered from memory", o.gets.Load(), c.Counters.Negative.Load())
		if o.gets.Load() != 1 || c.Counters.Negative.Load() != 99 {
			t.Fatalf("100 requests for a failing name: %d origin GETs (want 1), %d remembered", o.gets.Load(), c.Counters.Negative.Load())
		}
		time.Sleep(DefaultNegativeTTL)
		o.mu.Lock()
		delete(o.status, "images/broken.img")
		o.files["images/broken.img"] = []byte("fixed")
		o.mu.Unlock()
		if err := c.Ensure("images/broken.img"); err != nil || o.gets.Load() != 2 {
			t.Fatalf("after NegativeTTL: %v, %d GETs; want the fetch tried again", err, o.gets.Load())
		}
	})
}

// TestNegativeBounded: 10,000 new failing names (clients pick them) keep
// at most maxNegative failures in memory, the oldest forgotten first.
func TestNegativeBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := newMemOrigin()
		c := memCache(t, o, t.TempDir(), nil)
		for i := range 10000 {
			if err := c.Ensure(fmt.Sprintf("pxelinux.cfg/%08X", i)); !errors.Is(err, filestore.ErrNotFound) {
				t.Fatal(err)
			}
		}
		c.mu.Lock()
		n, neg := len(c.entries), c.negative.Len()
		_, newest := c.entries["pxelinux.cfg/0000270F"]
		_, oldest := c.entries["pxelinux.cfg/00000000"]
		c.mu.Unlock()
		if n != maxNegative || neg != maxNegative || !newest || oldest {
			t.Fatalf("%d entries, %d remembered failures (cap %d); newest kept %v, oldest kept %v", n, neg, maxNegative, newest, oldest)
		}
	})
}

// cacheBytes is what files/ holds on disk.
func cacheBytes(t *testing.T, c *Cache) int64 {
	var n int64
	filepath.WalkDir(c.FilesDir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			st, _ := d.Info()
			n += st.Size()
		}
		return nil
	})
	return n
}

// TestMaxSizeLRU is the second attack of finding 12: a client asking for
// every file of the origin pulled all of it onto the rack's disk. Now
// the files stay under MaxSize, the least recently used evicted first (a
// file in constant use stays); a file bigger than MaxSize is refused
// before a byte is written, also when the origin sends no length; and a
// restart with a smaller MaxSize trims the cache.
func TestMaxSizeLRU(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const mb = 1 << 20
		o := newMemOrigin()
		for i := range 10 {
			o.files[fmt.Sprintf("repo/pkg%d.rpm", i)] = bytes.Repeat([]byte{byte(i)}, mb)
		}
		o.files["big.iso"] = make([]byte, 4*mb)
		o.files["stream.iso"] = make([]byte, 4*mb)
		o.chunked["stream.iso"] = true
		dir := t.TempDir()
		c := memCache(t, o, dir, func(c *Cache) { c.MaxSize = 3*mb + mb/2 })
		for i := range 10 {
			if err := c.Ensure(fmt.Sprintf("repo/pkg%d.rpm", i)); err != nil {
				t.Fatal(err)
			}
			if err := c.Ensure("repo/pkg0.rpm"); err != nil { // in constant use
				t.Fatal(err)
			}
			if n := cacheBytes(t, c); n > c.MaxSize {
				t.Fatalf("after pkg%d: %d bytes cached, MaxSize %d", i, n, c.MaxSize)
			}
		}
		for i, want := range []bool{true, false, false, false, false, false, false, false, true, true} {
			if _, err := os.Stat(filepath.Join(c.FilesDir(), fmt.Sprintf("repo/pkg%d.rpm", i))); (err == nil) != want {
				t.Errorf("pkg%d cached: %v, want %v", i, err == nil, want)
			}
		}
		if c.Counters.Evicted.Load() != 7 || c.Counters.Bytes.Load() != 3*mb {
			t.Errorf("evicted %d (want 7), %d bytes counted (want %d)", c.Counters.Evicted.Load(), c.Counters.Bytes.Load(), 3*mb)
		}
		for _, name := range []string{"big.iso", "stream.iso"} {
			if err := c.Ensure(name); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%s (4 MiB, MaxSize 3.5 MiB): %v, want ErrTooLarge", name, err)
			}
			noLeftovers(t, c, name)
		}
		if n := cacheBytes(t, c); n > c.MaxSize {
			t.Fatalf("%d bytes cached after the refusals", n)
		}
		c.Close()
		c2 := memCache(t, o, dir, func(c *Cache) { c.MaxSize = mb })
		if n := cacheBytes(t, c2); n > mb {
			t.Fatalf("reopened with MaxSize 1 MiB: %d bytes cached", n)
		}
	})
}

// TestWaitBounded is the third attack of finding 12: a request waited for
// a slow fetch up to the 10-minute fetch timeout. Now it gets ErrWait
// after Wait; the fetch goes on and the next request finds the file. And
// at most maxFlights fetches run at once.
func TestWaitBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := newMemOrigin()
		o.files["images/install.img"] = []byte("slow but whole")
		gate := make(chan struct{})
		o.gates["images/install.img"] = gate
		c := memCache(t, o, t.TempDir(), nil)
		start := time.Now()
		err := c.Ensure("images/install.img")
		if !errors.Is(err, ErrWait) || time.Since(start) != DefaultWait {
			t.Fatalf("slow fetch: %v after %v, want ErrWait after %v", err, time.Since(start), DefaultWait)
		}
		close(gate)
		synctest.Wait()
		if err := c.Ensure("images/install.img"); err != nil || o.gets.Load() != 1 || c.Counters.Hits.Load() != 1 {
			t.Fatalf("after the fetch finished: %v, %d GETs, %d hits", err, o.gets.Load(), c.Counters.Hits.Load())
		}

		defer func(n int) { maxFlights = n }(maxFlights)
		maxFlights = 4
		hold := make(chan struct{})
		errs := make(chan error, maxFlights)
		for i := range maxFlights {
			name := fmt.Sprintf("slow%d", i)
			o.mu.Lock()
			o.files[name], o.gates[name] = []byte("x"), hold
			o.mu.Unlock()
			go func() { errs <- c.Ensure(name) }()
		}
		synctest.Wait()
		if err := c.Ensure("one-more"); !errors.Is(err, ErrBusy) {
			t.Fatalf("a fetch beyond %d running: %v, want ErrBusy", maxFlights, err)
		}
		close(hold)
		for range maxFlights {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	})
}
