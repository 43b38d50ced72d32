package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
)

// CreateOptions tunes Create. The zero value means the defaults.
type CreateOptions struct {
	// ChunkSize is the chunk size in bytes: a power of two from
	// MinChunkSize to MaxChunkSize. 0 means DefaultChunkSize.
	ChunkSize int
	// Workers is the number of compressing goroutines, each with its own
	// zstd encoder. 0 means runtime.NumCPU().
	Workers int
	// Progress, if set, is called after each chunk is handed to the sink
	// with the raw bytes done so far (holes included). It runs on Create's
	// goroutine and must return quickly.
	Progress func(rawDone int64)
}

func (o *CreateOptions) chunkSize() int {
	if o.ChunkSize == 0 {
		return DefaultChunkSize
	}
	return o.ChunkSize
}

// CheckChunkSize says whether n is a legal chunk size.
func CheckChunkSize(n int) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("image: chunk size %d (must be a power of two from %d to %d)", n, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// slotsPerWorker is how many chunks each worker may have in flight
// (being read, compressed, or waiting for its turn at the sink): two keep
// a worker busy while the sink takes the previous chunk; more only add
// memory (two chunk-size buffers each).
const slotsPerWorker = 2

type slot struct {
	raw, comp []byte
}

type job struct {
	i      int
	n      int
	s      *slot // nil for a chunk no extent touches
	kind   Kind
	stored []byte
	digest [32]byte
	done   chan struct{}
}

// Create cuts src into chunks, compresses them on all cores and hands them
// to sink in chunk order (the sink must have been made for src.Size() and
// opts' chunk size). Ranges src reports as unallocated are never read and
// become holes, as do chunks whose bytes are all zero; each other chunk is
// stored as a zstd frame (level SpeedDefault, one encoder per worker), or
// raw when zstd does not shrink it. Memory is bounded: at most
// slotsPerWorker chunks per worker are in flight. Create stops at the
// first error, or when ctx is cancelled; it does not call the sink's
// Finish.
func Create(ctx context.Context, src Source, sink Sink, opts CreateOptions) error {
	cs := opts.chunkSize()
	if err := CheckChunkSize(cs); err != nil {
		return err
	}
	size := src.Size()
	if size <= 0 {
		return fmt.Errorf("image: source is %d bytes", size)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	extents, err := src.Extents(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	p := &pipeline{
		ctx: ctx, cancel: cancel, src: src, cs: cs, size: size,
		free: make(chan *slot, workers*slotsPerWorker),
	}
	for range cap(p.free) {
		p.free <- &slot{raw: make([]byte, cs), comp: make([]byte, 0, cs)}
	}
	p.order = make(chan *job, cap(p.free))
	p.work = make(chan *job)
	for range workers {
		p.wg.Go(p.compressor)
	}
	// The reader: one goroutine reading in order, the way disks like it.
	p.wg.Go(func() { p.read(extents) })

	// The collector, on this goroutine: chunks go to the sink in order.
	err = p.collect(sink, opts.Progress)
	cancel(err)
	// Unblock the reader and workers and wait for them: every job sent to
	// work is finished by a worker, and the reader returns on ctx.
	go func() {
		for range p.order {
		}
	}()
	p.wg.Wait()
	return err
}

// pipeline is one Create run: a reader, compressing workers and the
// collector, joined by channels. Each job's fields are written before its
// done is closed and read only after, so no lock is needed.
type pipeline struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	src    Source
	cs     int
	size   int64
	free   chan *slot // buffers not in flight
	order  chan *job  // every job, in chunk order, to the collector
	work   chan *job  // read jobs, to the workers
	wg     sync.WaitGroup
}

// compressor is one compressing worker with its own zstd encoder.
func (p *pipeline) compressor() {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // the SHA-256 of the raw bytes covers it
		zstd.WithWindowSize(max(zstd.MinWindowSize, p.cs)))
	if err != nil {
		p.cancel(fmt.Errorf("image: zstd encoder: %w", err))
		for j := range p.work {
			close(j.done)
		}
		return
	}
	defer enc.Close()
	for j := range p.work {
		compress(enc, j)
		close(j.done)
	}
}

// send passes j on ch unless the run is cancelled first.
func (p *pipeline) send(ch chan<- *job, j *job) bool {
	select {
	case ch <- j:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// read reads every chunk in order: a chunk no extent touches becomes a
// hole without being read; the others take a free slot, are read, and go
// both to the collector (for order) and to the workers.
func (p *pipeline) read(ext []Extent) {
	defer close(p.work)
	defer close(p.order)
	chunks := int(chunkCount(uint32(p.cs), uint64(p.size)))
	for i := range chunks {
		off, n := rawSpan(uint32(p.cs), uint64(p.size), i)
		for len(ext) > 0 && ext[0].Off+ext[0].Len <= off {
			ext = ext[1:]
		}
		j := &job{i: i, n: n, done: make(chan struct{})}
		if len(ext) == 0 || ext[0].Off >= off+int64(n) {
			// No allocated byte in this chunk: a hole, not read.
			j.kind, j.digest = KindHole, ZeroDigest(n)
			close(j.done)
			if !p.send(p.order, j) {
				return
			}
			continue
		}
		select {
		case j.s = <-p.free:
		case <-p.ctx.Done():
			return
		}
		if err := readChunk(p.src, j.s.raw[:n], off, ext); err != nil {
			p.cancel(fmt.Errorf("image: reading chunk %d (raw offset %d): %w", i, off, err))
			return
		}
		if !p.send(p.order, j) || !p.send(p.work, j) {
			return
		}
	}
}

// collect hands the jobs to sink in chunk order as each is done, returning
// its slot to the free list, until order closes or the run fails.
func (p *pipeline) collect(sink Sink, progress func(int64)) error {
	var done int64
	for j := range p.order {
		select {
		case <-j.done:
		case <-p.ctx.Done():
			return context.Cause(p.ctx)
		}
		var stored []byte
		if j.kind != KindHole {
			stored = j.stored
		}
		if err := sink.Add(j.i, j.kind, stored, j.digest); err != nil {
			return err
		}
		if j.s != nil {
			p.free <- j.s
		}
		done += int64(j.n)
		if progress != nil {
			progress(done)
		}
	}
	// order was closed: either every chunk went through, or the reader
	// stopped on an error or cancellation.
	return context.Cause(p.ctx)
}

// readChunk reads the raw bytes of one chunk at off into b: the parts
// covered by extents are read from src, the rest is zeroed.
func readChunk(src Source, b []byte, off int64, ext []Extent) error {
	end := off + int64(len(b))
	pos := off
	for _, e := range ext {
		if e.Off >= end {
			break
		}
		lo, hi := max(e.Off, off), min(e.Off+e.Len, end)
		if lo >= hi {
			continue
		}
		clear(b[pos-off : lo-off])
		if _, err := src.ReadAt(b[lo-off:hi-off], lo); err != nil {
			return err
		}
		pos = hi
	}
	clear(b[pos-off:])
	return nil
}

// compress fills in a read job's kind, stored bytes and digest.
func compress(enc *zstd.Encoder, j *job) {
	raw := j.s.raw[:j.n]
	if allZero(raw) {
		j.kind, j.digest = KindHole, ZeroDigest(j.n)
		return
	}
	j.digest = sha256.Sum256(raw)
	z := enc.EncodeAll(raw, j.s.comp[:0])
	if cap(z) > cap(j.s.comp) {
		j.s.comp = z[:0] // keep the grown buffer for the next chunk
	}
	if len(z) >= len(raw) {
		j.kind, j.stored = KindRaw, raw
		return
	}
	j.kind, j.stored = KindZstd, z
}

// allZero reports whether b is all zero bytes, at memory speed (bytes.Equal
// is the runtime's vectorised memequal; it stops at the first difference).
func allZero(b []byte) bool {
	z := zeroes()
	for len(b) > 0 {
		n := min(len(b), len(z))
		if !bytes.Equal(b[:n], z[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// PartitionTable names the partition table at the start of a disk:
// "gpt" if LBA 1 holds the EFI header signature "EFI PART" (UEFI 2.10
// §5.3.2; with 512-byte sectors, byte 512), "dos" for an MBR boot
// signature 0x55 0xAA at bytes 510-511, else "".
func PartitionTable(first []byte) string {
	if len(first) >= 520 && string(first[512:520]) == "EFI PART" {
		return "gpt"
	}
	if len(first) >= 512 && first[510] == 0x55 && first[511] == 0xAA {
		return "dos"
	}
	return ""
}

// SourceMeta returns the metadata for an image of src: created now, source
// name, tool "mtftpd <version>" and the partition table found in src's
// first 1 KiB.
func SourceMeta(src Source, name, version string) (Meta, error) {
	m := Meta{Created: time.Now().UTC().Truncate(time.Second), Source: name, Tool: "mtftpd " + version}
	b := make([]byte, min(1024, src.Size()))
	if _, err := src.ReadAt(b, 0); err != nil {
		return m, fmt.Errorf("image: reading the first %d bytes of %s: %w", len(b), name, err)
	}
	m.PartitionTable = PartitionTable(b)
	return m, nil
}

// WriteFile images src into the file path: it writes a temp file
// (path.tmp-*) in path's directory, fsyncs it and renames it to path on
// success; on any failure, including ctx being cancelled, the temp file is
// removed and path is untouched.
func WriteFile(ctx context.Context, src Source, path string, meta Meta, opts CreateOptions) (*Index, error) {
	// The image is served by a server that may run as another user.
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer f.Abort()
	w, err := NewWriter(f.File, src.Size(), opts.chunkSize(), meta)
	if err != nil {
		return nil, err
	}
	if err := Create(ctx, src, w, opts); err != nil {
		return nil, err
	}
	ix, err := w.Finish()
	if err != nil {
		return nil, err
	}
	// A failed directory fsync leaves the image in place, only its
	// durability in doubt: not every filesystem can.
	if err := f.Commit(); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return nil, fmt.Errorf("image: %w", err)
	}
	return ix, nil
}

var errSourceClosed = errors.New("image: source closed")
