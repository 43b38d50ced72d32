package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Scan reads every data chunk's raw range from t and reports which differ
// from the image: need[i] is true when chunk i's bytes on t do not have its
// index digest. Holes are never needed (ChunkWriter.ZeroHoles writes them).
// A deploy cut half way then fetches only what is missing, and a disk that
// holds an earlier version of the image only the chunks that changed.
//
// Chunks are read by workers goroutines (GOMAXPROCS if <= 0). progress, if
// not nil, is called after each chunk with the total raw bytes read so
// far; calls do not overlap. The total is the sum of the data chunks' raw
// lengths.
func Scan(ctx context.Context, t *Target, ix *Index, workers int, progress func(int64)) (need []bool, err error) {
	need = make([]bool, len(ix.Entries))
	err = eachChunk(ctx, t, ix, workers, progress, func(i int) bool { return ix.Entries[i].Kind != KindHole },
		func(i int, raw []byte) error {
			need[i] = sha256.Sum256(raw) != ix.Entries[i].Digest
			return nil
		})
	if err != nil {
		return nil, err
	}
	return need, nil
}

// VerifyTarget reads the whole raw size of the image back from t, digests
// every chunk (holes included), recomputes the image digest and compares it
// with the header's. A chunk that differs is reported as a *ChunkError
// naming the first (lowest-numbered) bad chunk.
func VerifyTarget(ctx context.Context, t *Target, ix *Index, workers int) error {
	digests := make([][32]byte, len(ix.Entries))
	var (
		mu    sync.Mutex
		first *ChunkError
	)
	// Past a bad chunk nothing is needed but to check the chunks before
	// it, so that the one reported is the first.
	firstBad := atomic.Int64{}
	firstBad.Store(int64(len(ix.Entries)))
	err := eachChunk(ctx, t, ix, workers, nil, func(i int) bool { return int64(i) < firstBad.Load() },
		func(i int, raw []byte) error {
			e := ix.Entries[i]
			if e.Kind == KindHole && allZero(raw) {
				digests[i] = e.Digest // checking for zeros is cheaper than hashing them
				return nil
			}
			digests[i] = sha256.Sum256(raw)
			if digests[i] == e.Digest {
				return nil
			}
			off, _ := ix.RawSpan(i)
			mu.Lock()
			if first == nil || i < first.Chunk {
				first = &ChunkError{Chunk: i, RawOffset: off, Want: e.Digest, Got: digests[i]}
				firstBad.Store(int64(i))
			}
			mu.Unlock()
			return nil
		})
	if err != nil {
		return err
	}
	if first != nil {
		return fmt.Errorf("image: verifying %s: %w", t.Path(), first)
	}
	if got := ImageDigest(func(i int) [32]byte { return digests[i] }, len(digests)); got != ix.Header.ImageDigest {
		return fmt.Errorf("image: verifying %s: image digest is %x, the header says %x: %w", t.Path(), got, ix.Header.ImageDigest, ErrCorrupt)
	}
	return nil
}

// eachChunk reads the raw range of every chunk i for which want(i) holds,
// in roughly ascending order on workers goroutines, and calls fn with it
// (raw is reused after fn returns).
func eachChunk(ctx context.Context, t *Target, ix *Index, workers int, progress func(int64), want func(i int) bool,
	fn func(i int, raw []byte) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if raw := int64(ix.Header.RawSize); t.Size() < raw {
		return &TargetError{Path: t.Path(), What: fmt.Sprintf("is %s, the image needs %s", sizeString(t.Size()), sizeString(raw)),
			Err: ErrTargetTooSmall}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
		progMu   sync.Mutex
		done     int64
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for range workers {
		wg.Go(func() {
			buf := make([]byte, ix.Header.ChunkSize)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ix.Entries) || ctx.Err() != nil {
					return
				}
				if !want(i) {
					continue
				}
				off, n := ix.RawSpan(i)
				if _, err := t.ReadAt(buf[:n], off); err != nil {
					fail(fmt.Errorf("image: reading chunk %d (raw offset %d, %d bytes) from %s: %w", i, off, n, t.Path(), err))
					return
				}
				if err := fn(i, buf[:n]); err != nil {
					fail(err)
					return
				}
				if progress != nil {
					progMu.Lock()
					done += int64(n)
					progress(done)
					progMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
