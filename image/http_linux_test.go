package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// imageServer serves an image with http.ServeContent (Range, If-Range) and
// counts the bytes each request asked for.
type imageServer struct {
	mu       sync.Mutex
	img      []byte
	tag      string // ETag of img
	etag     bool   // send it
	requests atomic.Int64
	asked    atomic.Int64 // bytes requested by Range (the whole file for a plain GET)
	served   atomic.Int64 // body bytes written
	// hook, if set, may replace the response (return true when it did).
	hook func(n int64, w http.ResponseWriter, r *http.Request) bool
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	w = countingWriter{w, &s.served}
	s.mu.Lock()
	img, etag := s.img, s.tag
	s.mu.Unlock()
	s.asked.Add(rangeBytes(r.Header.Get("Range"), int64(len(img))))
	if s.hook != nil && s.hook(n, w, r) {
		return
	}
	if s.etag {
		w.Header().Set("ETag", etag)
	}
	http.ServeContent(w, r, "disk.img", time.Unix(1700000000, 0), bytes.NewReader(img))
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (s *imageServer) set(img []byte) {
	sum := sha256.Sum256(img)
	s.mu.Lock()
	s.img, s.tag = img, fmt.Sprintf(`"%x"`, sum[:8])
	s.mu.Unlock()
}

// rangeBytes is the length a "bytes=a-b" header asks for (the whole size
// without one).
func rangeBytes(h string, size int64) int64 {
	a, b, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	if !ok {
		return size
	}
	lo, _ := strconv.ParseInt(a, 10, 64)
	hi, _ := strconv.ParseInt(b, 10, 64)
	return min(hi, size-1) - lo + 1
}

func newImageServer(t *testing.T, img []byte, etag bool) (*imageServer, string) {
	s := &imageServer{etag: etag}
	s.set(img)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/disk.img"
}

// neededStored is the stored bytes of the needed chunks, each shared range
// once.
func neededStored(ix *Index, need []bool) int64 {
	seen := map[uint64]bool{}
	var n int64
	for i, e := range ix.Entries {
		if e.Kind != KindHole && (need == nil || need[i]) && !seen[e.Offset] {
			seen[e.Offset] = true
			n += int64(e.Len)
		}
	}
	return n
}

func TestFetchHTTP(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(6, 300*testChunk+512, testChunk)
	img := encodeImage(t, raw, testChunk)
	want := parseImage(t, img)
	for _, etag := range []bool{false, true} {
		t.Run(fmt.Sprintf("etag=%v", etag), func(t *testing.T) {
			srv, url := newImageServer(t, img, etag)
			ix, err := FetchIndexHTTP(ctx, http.DefaultClient, url)
			if err != nil {
				t.Fatal(err)
			}
			if ix.Header.ImageDigest != want.Header.ImageDigest || len(ix.Entries) != len(want.Entries) {
				t.Fatal("FetchIndexHTTP: another index than ReadIndex of the file")
			}
			if a := srv.asked.Load(); a != ix.PrefixLen() {
				t.Errorf("FetchIndexHTTP asked for %d bytes, the prefix is %d", a, ix.PrefixLen())
			}

			// A target holding a third of the chunks: Scan, then fetch the rest.
			tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			third := make([]bool, len(ix.Entries))
			for i := range third {
				third[i] = i%3 == 0
			}
			if _, err := deployPieces(t, tg, img, ix, third, neededRanges, 13); err != nil {
				t.Fatal(err)
			}
			need, err := Scan(ctx, tg, ix, 2, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv.asked.Store(0)
			srv.requests.Store(0)
			w := NewChunkWriter(ix, tg, 3)
			if err := FetchHTTP(ctx, http.DefaultClient, url, ix, need, w, 3); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
				t.Fatal("target after FetchHTTP differs from the raw disk")
			}
			stored := neededStored(ix, need)
			t.Logf("%d requests, %d bytes asked, needed chunks' stored bytes %d (whole data %d)",
				srv.requests.Load(), srv.asked.Load(), stored, ix.Header.DataLen)
			if a := srv.asked.Load(); a != stored {
				t.Errorf("FetchHTTP asked for %d bytes, the needed chunks are %d stored bytes", a, stored)
			}
		})
	}
}

func TestFetchHTTPNoRangeSupport(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(7, 40*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	srv, url := newImageServer(t, img, false)
	srv.hook = func(_ int64, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Length", strconv.Itoa(len(img)))
		w.Write(img) // 200 whatever the Range header says
		return true
	}
	ix, err := FetchIndexHTTP(ctx, http.DefaultClient, url)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	garbage(t, tg, tg.Size())
	w := NewChunkWriter(ix, tg, 2)
	if err := w.ZeroHoles(ctx); err != nil {
		t.Fatal(err)
	}
	srv.requests.Store(0)
	if err := FetchHTTP(ctx, http.DefaultClient, url, ix, nil, w, 4); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
		t.Fatal("target differs from the raw disk")
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d requests to a server without Range support, want 1", n)
	}
}

func TestFetchHTTPRetries(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(8, 400*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	srv, url := newImageServer(t, img, true)
	defer func(old int64) { httpRequestMax = old }(httpRequestMax)
	httpRequestMax = 256 << 10
	defer func(old time.Duration) { httpRetryDelay = old }(httpRetryDelay)
	httpRetryDelay = time.Millisecond
	// The first request for each range end fails, alternately with a 503
	// and a body cut half way; the retry (for what is missing: the same
	// end) succeeds.
	var cut atomic.Int64
	var seenMu sync.Mutex
	seen := map[string]bool{}
	srv.hook = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		_, end, _ := strings.Cut(r.Header.Get("Range"), "-")
		seenMu.Lock()
		first := !seen[end]
		seen[end] = true
		seenMu.Unlock()
		if !first {
			return false
		}
		switch n % 2 {
		case 0:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		case 1: // half the body, then the connection drops
			lo, _, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-")
			off, _ := strconv.ParseInt(lo, 10, 64)
			k := rangeBytes(r.Header.Get("Range"), int64(len(img)))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+k-1, len(img)))
			w.Header().Set("Content-Length", strconv.FormatInt(k, 10))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(img[off : off+k/2])
			cut.Add(1)
			panic(http.ErrAbortHandler)
		}
		return false
	}
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	w := NewChunkWriter(ix, tg, 2)
	if err := FetchHTTP(ctx, http.DefaultClient, url, ix, nil, w, 3); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
		t.Fatal("target differs from the raw disk")
	}
	if cut.Load() == 0 {
		t.Fatal("no response was cut: the test tested nothing")
	}
	// Retries ask only for what is missing: the server sends each byte
	// about once (a cut response's last bytes may not have reached the
	// client), not the cut halves again.
	served, stored := srv.served.Load(), neededStored(ix, nil)
	t.Logf("%d responses cut, %d bytes served for %d stored", cut.Load(), served, stored)
	if served > stored+stored/20 {
		t.Errorf("%d bytes served for %d stored: retries refetch more than the missing parts", served, stored)
	}
}

func TestFetchHTTPImageChanged(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(9, 300*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	// One bit of the last stored chunk (fetched last) flipped: same size.
	last := 0
	for i, e := range ix.Entries {
		if e.Offset > ix.Entries[last].Offset {
			last = i
		}
	}
	img2 := corruptChunk(img, ix, last)
	bigger := append(bytes.Clone(img), make([]byte, 4096)...)
	for _, c := range []struct {
		name string
		etag bool
		next []byte
		want error
	}{
		{"size changes", false, bigger, ErrImageChanged},
		{"ETag changes", true, img2, ErrImageChanged},
		// Without ETag or size change, the chunk digests catch it.
		{"content changes", false, img2, ErrCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, url := newImageServer(t, img, c.etag)
			defer func(old int64) { httpRequestMax = old }(httpRequestMax)
			httpRequestMax = 256 << 10
			ix, err := FetchIndexHTTP(ctx, http.DefaultClient, url)
			if err != nil {
				t.Fatal(err)
			}
			srv.hook = func(n int64, w http.ResponseWriter, r *http.Request) bool {
				if n == 3 { // request 3 is still served from the old file, 4 from the new
					srv.set(c.next)
				}
				return false
			}
			srv.requests.Store(0)
			tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			w := NewChunkWriter(ix, tg, 2)
			err = FetchHTTP(ctx, http.DefaultClient, url, ix, nil, w, 1)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("FetchHTTP while the file changes: %v, want %v", err, c.want)
			}
			if n := srv.requests.Load(); c.want == ErrImageChanged && n > 4 {
				t.Errorf("%d requests: the fetch went on after the change", n)
			}
		})
	}
}

func TestFetchIndexHTTPErrors(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(10, 20*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	for _, c := range []struct {
		name string
		file []byte
		want error
	}{
		{"not an image", bytes.Repeat([]byte("x"), 10000), ErrNotImage},
		{"short file", img[:100], ErrTruncated},
		{"truncated data", img[:len(img)-1], ErrTruncated},
		{"trailing bytes", append(bytes.Clone(img), 0), ErrCorrupt},
		{"empty", nil, ErrNotImage},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, url := newImageServer(t, c.file, false)
			if _, err := FetchIndexHTTP(ctx, http.DefaultClient, url); !errors.Is(err, c.want) {
				t.Fatalf("FetchIndexHTTP: %v, want %v", err, c.want)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := FetchIndexHTTP(ctx, http.DefaultClient, srv.URL+"/x"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("FetchIndexHTTP of a 404: %v", err)
	}
}

func TestContentRange(t *testing.T) {
	for _, c := range []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-4095/10000", 0, 4095, 10000, true},
		{"bytes 5-5/6", 5, 5, 6, true},
		{"bytes 0-4095/*", 0, 0, 0, false},
		{"bytes 10-5/100", 0, 0, 0, false},
		{"bytes 0-100/100", 0, 0, 0, false},
		{"bytes -1-5/100", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		f, l, tot, err := contentRange(c.in)
		if (err == nil) != c.ok || (c.ok && (f != c.first || l != c.last || tot != c.total)) {
			t.Errorf("contentRange(%q) = %d, %d, %d, %v", c.in, f, l, tot, err)
		}
	}
}

func FuzzContentRange(f *testing.F) {
	f.Add("bytes 0-4095/10000")
	f.Add("bytes 0-0/1")
	f.Add("bytes 9223372036854775806-9223372036854775806/9223372036854775807")
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := contentRange(s)
		if err != nil {
			return
		}
		if first < 0 || last < first || total <= last {
			t.Fatalf("contentRange(%q) accepted %d-%d/%d", s, first, last, total)
		}
		again := fmt.Sprintf("bytes %d-%d/%d", first, last, total)
		f2, l2, t2, err := contentRange(again)
		if err != nil || f2 != first || l2 != last || t2 != total {
			t.Fatalf("round trip of %q via %q: %d-%d/%d, %v", s, again, f2, l2, t2, err)
		}
	})
}
