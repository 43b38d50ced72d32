package mirror

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// partOverhead bounds what one multipart part adds besides its bytes: the
// boundary line and the Content-Type and Content-Range headers.
const partOverhead = 256

// TestManyRangesNoAmplification is the attack of issue 13 finding 16:
// 60,000 one-byte ranges in one request. Unbounded, every range became a
// multipart part with its own headers (9.4 MB for a 700 KB request). Now a
// request with more than MaxRanges ranges, or overlapping ones, gets the
// file once (200), and up to MaxRanges disjoint ranges still get 206.
func TestManyRangesNoAmplification(t *testing.T) {
	root := t.TempDir()
	const size = 256 << 10
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	os.WriteFile(filepath.Join(root, "install.img"), data, 0o644)
	base := startMirror(t, root)

	get := func(rng string) (int, int64) {
		req, _ := http.NewRequest(http.MethodGet, base+"/install.img", nil)
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, n
	}
	ranges := func(n, stride int) string {
		var b strings.Builder
		b.WriteString("bytes=")
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d-%d", i*stride, i*stride)
		}
		return b.String()
	}
	attack := ranges(60000, 2)
	code, n := get(attack)
	t.Logf("60,000 one-byte ranges (%d-byte header): %d, %d bytes for a %d-byte file", len(attack), code, n, size)
	if code != http.StatusOK || n != size {
		t.Fatalf("60,000 ranges: status %d, %d bytes; want the file once (200, %d bytes)", code, n, size)
	}
	for _, c := range []struct {
		name, rng string
		code      int
		max       int64
	}{
		{"MaxRanges+1", ranges(MaxRanges+1, 1000), http.StatusOK, size},
		{"MaxRanges disjoint", ranges(MaxRanges, 1000), http.StatusPartialContent, MaxRanges * (1 + partOverhead)},
		{"overlapping", "bytes=0-99999,50000-149999", http.StatusOK, size},
		{"overlapping suffix", "bytes=-200000,100000-", http.StatusOK, size},
		{"one range", "bytes=10-19", http.StatusPartialContent, 10},
	} {
		code, n := get(c.rng)
		if code != c.code || n > c.max {
			t.Errorf("%s: status %d, %d bytes; want %d and at most %d bytes", c.name, code, n, c.code, c.max)
		}
	}
}

// FuzzRanges: whatever the Range header, the answer is never more than
// the file plus MaxRanges parts' headers (no amplification), and
// rangesAcceptable does not panic.
func FuzzRanges(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=0-0,2-2,4-4", "bytes=-5", "bytes=5-", "bytes=0-1,1-2",
		"bytes=" + strings.Repeat("0-0,", 40), "bytes= 1 - 2 , 3-", "items=0-1", "bytes=9-1", "bytes=-0", "bytes=,,,"} {
		f.Add(s, int64(100))
	}
	mod := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, h string, size int64) {
		size = min(max(size, 0), 1<<16)
		ok := rangesAcceptable(h, size)
		if !ok && len(h) < len("bytes=") {
			t.Fatalf("%q refused", h)
		}
		if !ok {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/f", nil)
		req.Header.Set("Range", h)
		w := httptest.NewRecorder()
		http.ServeContent(w, req, "f", mod, bytes.NewReader(make([]byte, size)))
		if n := int64(w.Body.Len()); n > size+MaxRanges*partOverhead+64 {
			t.Fatalf("Range %q on %d bytes: %d-byte answer", h, size, n)
		}
	})
}
