package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// Open reads and checks the header and index of the image file at path and
// checks that the file is as long as the header says. The caller closes f.
func Open(path string) (f *os.File, ix *Index, err error) {
	f, err = os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("image: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("image: %w", err)
	}
	ix, err = ReadIndex(io.NewSectionReader(f, 0, fi.Size()))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if size := fi.Size(); size != ix.FileSize() {
		if size < ix.FileSize() {
			i, e := firstPast(ix, size)
			return nil, nil, fmt.Errorf("%s: %w", path, truncated(size,
				"the file is %d bytes, the header says %d: chunk %d's stored bytes %d+%d are past the end",
				size, ix.FileSize(), i, e.Offset, e.Len))
		}
		return nil, nil, fmt.Errorf("%s: %w", path, corrupt(ix.FileSize(), "%d bytes after the end of the data", size-ix.FileSize()))
	}
	return f, ix, nil
}

// firstPast returns the first chunk whose stored bytes end past size.
func firstPast(ix *Index, size int64) (int, Entry) {
	for i, e := range ix.Entries {
		if e.Kind != KindHole && int64(e.Offset)+int64(e.Len) > size {
			return i, e
		}
	}
	return -1, Entry{}
}

// Verify opens the image at path and reads, decodes and checks every
// chunk against its digest (a chunk shared by several entries once), with
// workers goroutines (0: runtime.NumCPU()). progress, if set, gets the raw
// bytes verified so far and is called from several goroutines. On failure
// the error names the lowest-numbered bad chunk found (a *ChunkError for a
// digest mismatch).
func Verify(ctx context.Context, path string, workers int, progress func(rawDone int64)) (*Index, error) {
	f, ix, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		bad     = -1
		badErr  error
		rawDone atomic.Int64
		next    atomic.Int64
		wg      sync.WaitGroup
		seen    = make([]bool, len(ix.Entries)) // entries whose stored bytes an earlier entry shares
		firstAt = make(map[uint64]struct{})
	)
	for i, e := range ix.Entries {
		if e.Kind == KindHole {
			continue
		}
		if _, ok := firstAt[e.Offset]; ok {
			seen[i] = true
		}
		firstAt[e.Offset] = struct{}{}
	}
	fail := func(i int, err error) {
		mu.Lock()
		if bad < 0 || i < bad {
			bad, badErr = i, err
		}
		mu.Unlock()
		cancel()
	}
	for range workers {
		wg.Go(func() {
			d, err := NewDecoder()
			if err != nil {
				fail(0, err)
				return
			}
			defer d.Close()
			stored := make([]byte, ix.Header.ChunkSize)
			raw := make([]byte, ix.Header.ChunkSize)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(ix.Entries) {
					return
				}
				e := ix.Entries[i]
				_, n := ix.RawSpan(i)
				if e.Kind != KindHole && !seen[i] {
					s := stored[:e.Len]
					if _, err := f.ReadAt(s, int64(e.Offset)); err != nil {
						fail(i, fmt.Errorf("image: chunk %d: reading %d stored bytes at %d: %w", i, e.Len, e.Offset, err))
						return
					}
					if _, err := d.Decode(ix, i, s, raw); err != nil {
						fail(i, err)
						return
					}
				}
				done := rawDone.Add(int64(n))
				if progress != nil {
					progress(done)
				}
			}
		})
	}
	wg.Wait()
	if badErr != nil {
		return ix, fmt.Errorf("%s: %w", path, badErr)
	}
	if err := parent.Err(); err != nil {
		return ix, err
	}
	return ix, nil
}
