package image

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// ErrWriterClosed is returned by Put after Close.
var ErrWriterClosed = errors.New("image: chunk writer closed")

// zeroRangeStep bounds one ZeroRange call of ZeroHoles, so that a
// cancelled context is noticed between steps: BLKZEROOUT of 1 GiB on a disk
// that must write the zeros takes seconds.
const zeroRangeStep = 1 << 30

// ChunkWriter decodes stored chunks, checks each against its index digest
// and writes it at its raw offset on a Target, on a fixed pool of workers.
//
// Memory is bounded whatever the image size: at most two chunks per worker
// are queued or being decoded (Put blocks while the queue is full), plus one
// raw buffer per worker and a small pool of recycled stored buffers.
//
// The first error (a digest mismatch, a corrupt frame, a write error, a
// misuse of Put) stops everything: chunks still queued are dropped, and
// every later Put, ZeroHoles and Close returns that error. A chunk whose
// digest does not match is never written.
//
// Put, PutShared, Buffer, ZeroHoles and Progress are safe for concurrent use.
type ChunkWriter struct {
	ix *Index
	t  *Target

	jobs chan chunkJob
	free chan []byte // recycled stored buffers, cap ChunkSize
	wg   sync.WaitGroup

	mu     sync.RWMutex // closed vs. sends on jobs
	closed bool

	failed  chan struct{} // closed on the first error
	errOnce sync.Once
	err     error

	closeOnce sync.Once
	closeErr  error

	chunks, bytes, holes, holeBytes atomic.Int64

	// bad, when set, takes chunks that fail their digest instead of
	// failing the writer: over multicast, anyone on the LAN can forge a
	// shard, and one forged datagram must not end every deploy in the
	// room; the deploy fetches such chunks again by unicast.
	bad atomic.Pointer[func(chunks []int, err error)]

	pending sync.WaitGroup // jobs queued and not yet done
}

// Wait waits until every chunk put so far is written (or rejected),
// without closing the writer.
func (w *ChunkWriter) Wait() { w.pending.Wait() }

// Tolerate makes chunks that fail their digest (or do not decode) go to
// bad instead of failing the writer; nil restores failing. They are never
// written. Call it before the first Put.
func (w *ChunkWriter) Tolerate(bad func(chunks []int, err error)) {
	if bad == nil {
		w.bad.Store(nil)
		return
	}
	w.bad.Store(&bad)
}

type chunkJob struct {
	chunks []int
	stored []byte
}

// Progress is what a ChunkWriter has written so far.
type Progress struct {
	Chunks    int64 // data chunks written (a shared chunk counts once per place it is written)
	Bytes     int64 // their raw bytes
	Holes     int64 // hole chunks zeroed by ZeroHoles
	HoleBytes int64 // their raw bytes
}

// NewChunkWriter starts workers (GOMAXPROCS if workers <= 0) writing the
// chunks of ix to t. A target smaller than the image's raw size fails
// every Put.
func NewChunkWriter(ix *Index, t *Target, workers int) *ChunkWriter {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	w := &ChunkWriter{
		ix: ix, t: t,
		// A worker busy with one chunk and one queued for it: two per
		// worker in flight.
		jobs:   make(chan chunkJob, workers),
		free:   make(chan []byte, 2*workers),
		failed: make(chan struct{}),
	}
	if raw := int64(ix.Header.RawSize); t.Size() < raw {
		w.fail(&TargetError{Path: t.Path(), What: fmt.Sprintf("is %s, the image needs %s", sizeString(t.Size()), sizeString(raw)),
			Err: ErrTargetTooSmall})
	}
	for range workers {
		w.wg.Add(1)
		go w.work()
	}
	return w
}

func (w *ChunkWriter) fail(err error) {
	w.errOnce.Do(func() {
		w.err = err
		close(w.failed)
	})
}

// Err is the first error, or nil.
func (w *ChunkWriter) Err() error {
	select {
	case <-w.failed:
		return w.err
	default:
		return nil
	}
}

// Buffer returns a buffer of n bytes (n at most the chunk size) to fill
// with a chunk's stored bytes and hand to Put, which recycles it.
func (w *ChunkWriter) Buffer(n int) []byte {
	select {
	case b := <-w.free:
		return b[:n]
	default:
		return make([]byte, n, max(n, int(w.ix.Header.ChunkSize)))
	}
}

func (w *ChunkWriter) recycle(b []byte) {
	if cap(b) != int(w.ix.Header.ChunkSize) {
		return
	}
	select {
	case w.free <- b:
	default:
	}
}

// Put queues chunk i's stored bytes (exactly Entries[i].Len of them) to be
// decoded, checked and written. It takes ownership of stored: the caller
// must not touch it after the call, whether Put succeeds or not (a buffer
// from Buffer is recycled). Put blocks while the queue is full. It returns
// the writer's first error, if there was one.
func (w *ChunkWriter) Put(i int, stored []byte) error {
	return w.PutShared([]int{i}, stored)
}

// PutShared is Put for several chunks that share one stored range (the
// same entry: offset, length, kind and digest): the bytes are decoded and
// checked once and written at each chunk's raw offset. chunks is not
// retained.
func (w *ChunkWriter) PutShared(chunks []int, stored []byte) error {
	if err := w.Err(); err != nil {
		return err
	}
	if err := w.checkShared(chunks, stored); err != nil {
		w.fail(err)
		return err
	}
	j := chunkJob{chunks: append([]int(nil), chunks...), stored: stored}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrWriterClosed
	}
	w.pending.Add(1)
	select {
	case w.jobs <- j:
		return nil
	case <-w.failed:
		w.pending.Done()
		return w.err
	}
}

func (w *ChunkWriter) checkShared(chunks []int, stored []byte) error {
	if len(chunks) == 0 {
		return errors.New("image: PutShared with no chunk")
	}
	n := len(w.ix.Entries)
	for _, i := range chunks {
		if i < 0 || i >= n {
			return fmt.Errorf("image: chunk %d out of range (the image has %d)", i, n)
		}
	}
	first := w.ix.Entries[chunks[0]]
	_, rawLen := w.ix.RawSpan(chunks[0])
	if first.Kind == KindHole {
		return fmt.Errorf("image: chunk %d is a hole: nothing stored to put (ZeroHoles writes it)", chunks[0])
	}
	if len(stored) != int(first.Len) {
		off, _ := w.ix.RawSpan(chunks[0])
		return fmt.Errorf("image: chunk %d (raw offset %d): %d stored bytes given, the index says %d: %w",
			chunks[0], off, len(stored), first.Len, ErrCorrupt)
	}
	for _, i := range chunks[1:] {
		_, n := w.ix.RawSpan(i)
		if w.ix.Entries[i] != first || n != rawLen {
			return fmt.Errorf("image: chunks %d and %d do not share one stored chunk (entries %+v and %+v)",
				chunks[0], i, first, w.ix.Entries[i])
		}
	}
	return nil
}

func (w *ChunkWriter) work() {
	defer w.wg.Done()
	dec, err := NewDecoder()
	if err != nil {
		w.fail(err)
	} else {
		defer dec.Close()
	}
	raw := make([]byte, w.ix.Header.ChunkSize)
	for j := range w.jobs {
		w.do(dec, raw, j)
		w.pending.Done()
	}
}

// do decodes, checks and writes one job.
func (w *ChunkWriter) do(dec *Decoder, raw []byte, j chunkJob) {
	if w.Err() != nil {
		w.recycle(j.stored)
		return
	}
	out, err := dec.Decode(w.ix, j.chunks[0], j.stored, raw)
	w.recycle(j.stored)
	if bad := w.bad.Load(); err != nil && bad != nil && errors.Is(err, ErrCorrupt) {
		(*bad)(j.chunks, err)
		return
	}
	if err != nil {
		if len(j.chunks) > 1 {
			err = fmt.Errorf("%w (shared by chunks %v: none written)", err, j.chunks)
		}
		w.fail(err)
		return
	}
	for _, i := range j.chunks {
		if w.Err() != nil {
			break
		}
		off, n := w.ix.RawSpan(i)
		if _, err := w.t.WriteAt(out[:n], off); err != nil {
			w.fail(fmt.Errorf("image: writing chunk %d (raw offset %d, %d bytes) to %s: %w", i, off, n, w.t.Path(), err))
			break
		}
		w.chunks.Add(1)
		w.bytes.Add(int64(n))
	}
}

// ZeroHoles makes every hole chunk's raw range read as zeros (runs of
// adjacent holes in one Target.ZeroRange). It may run while chunks are
// being put; it stops at the first error or when ctx is done.
func (w *ChunkWriter) ZeroHoles(ctx context.Context) error {
	if err := w.Err(); err != nil {
		return err
	}
	n := len(w.ix.Entries)
	for i := 0; i < n; {
		if w.ix.Entries[i].Kind != KindHole {
			i++
			continue
		}
		j := i
		for j < n && w.ix.Entries[j].Kind == KindHole {
			j++
		}
		start, _ := w.ix.RawSpan(i)
		lastOff, lastLen := w.ix.RawSpan(j - 1)
		end := lastOff + int64(lastLen)
		for off := start; off < end; off += zeroRangeStep {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := w.Err(); err != nil {
				return err
			}
			k := min(end-off, zeroRangeStep)
			if err := w.t.ZeroRange(off, k); err != nil {
				err = fmt.Errorf("image: zeroing holes %d..%d (raw %d+%d): %w", i, j-1, off, k, err)
				w.fail(err)
				return err
			}
			w.holeBytes.Add(k)
		}
		w.holes.Add(int64(j - i))
		i = j
	}
	return nil
}

// Progress returns the counters so far; safe to call at any time.
func (w *ChunkWriter) Progress() Progress {
	return Progress{Chunks: w.chunks.Load(), Bytes: w.bytes.Load(), Holes: w.holes.Load(), HoleBytes: w.holeBytes.Load()}
}

// Close waits for every queued chunk to be written, then syncs the target
// (it does not close it). It returns the first error of the writer, or of
// the sync. Later calls return the same; Put after Close fails.
func (w *ChunkWriter) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		close(w.jobs)
		w.mu.Unlock()
		w.wg.Wait()
		if err := w.Err(); err != nil {
			w.closeErr = err
			return
		}
		if err := w.t.Sync(); err != nil {
			w.closeErr = fmt.Errorf("image: syncing %s: %w", w.t.Path(), err)
			w.fail(w.closeErr)
		}
	})
	return w.closeErr
}
