//go:build linux

package mtftp

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// TestLabNativePartial: three receivers each want different ranges of one
// file (overlapping in part) from one session. Each gets exactly its
// bytes, each once, and the stream carries the stripes somebody wants,
// not the file.
func TestLabNativePartial(t *testing.T) {
	const size = 8 << 20
	lab, data, _, logs := labServerCfg(t, netlab.Options{Clients: 3}, size, `native_settle = "700ms"`)
	wants := [][]Range{
		{{0, 1 << 20}, {5 << 20, 512 << 10}},
		{{512 << 10, 1536 << 10}},
		{{7<<20 + 100, 1<<20 - 100}},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(wants))
	for i, want := range wants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = netlab.Enter(lab.NS(netlab.Client(i+1)), func() error {
				got := make([]byte, size)
				seen := make([]bool, size)
				r := &NativeReceiver{BlockSize: 1468, Timeout: 20 * time.Second}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				res, err := r.GetRanges(ctx, netlab.ServerAddr, "image.bin", size, want, func(off int64, b []byte) error {
					for j := range b {
						if seen[off+int64(j)] {
							return fmt.Errorf("byte %d delivered twice", off+int64(j))
						}
						seen[off+int64(j)] = true
					}
					copy(got[off:], b)
					return nil
				})
				if err != nil {
					return fmt.Errorf("GetRanges: %w (%+v)", err, res)
				}
				var in int64
				for _, w := range want {
					for o := w.Off; o < w.Off+w.Len; o++ {
						if !seen[o] {
							return fmt.Errorf("byte %d of %+v never delivered", o, w)
						}
					}
					if !bytes.Equal(got[w.Off:w.Off+w.Len], data[w.Off:w.Off+w.Len]) {
						return fmt.Errorf("range %+v differs from the file", w)
					}
					in += w.Len
				}
				n := 0
				for _, s := range seen {
					if s {
						n++
					}
				}
				if int64(n) != in {
					return fmt.Errorf("%d bytes delivered, %d wanted: bytes outside the ranges", n, in)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("receiver %d: %v", i+1, err)
		}
	}
	ss := waitNativeCompleted(t, logs, len(wants))
	wire, done := 0, 0
	for _, s := range ss {
		wire += logNum(s, "wire_bytes")
		done += logNum(s, "completed")
	}
	// The wanted stripes: 0–2 MiB, 5–5.5 MiB and 7–8 MiB, rounded out to
	// whole stripes of 64 × 1460 bytes: about 3.6 MiB of the 8.
	t.Logf("%d session(s), %d completed, wire %d bytes for a %d-byte file", len(ss), done, wire, size)
	if done != len(wants) || len(ss) != 1 {
		t.Fatalf("%d completed in %d sessions, want %d in one", done, len(ss), len(wants))
	}
	if wire < 3500<<10 || wire > size/2 {
		t.Fatalf("wire %d bytes: want the wanted stripes' ~3.6 MiB (and far less than the file's %d)", wire, size)
	}
}
