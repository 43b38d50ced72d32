package image

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Sink receives a chunked image in chunk order: Writer (an image file) and
// StreamWriter (a capture stream) are sinks, and Create feeds one.
type Sink interface {
	// Add takes chunk i (0, 1, 2, ... in order). stored is the chunk's
	// zstd frame or raw bytes and is not retained after Add returns; it is
	// nil for a hole, and may be nil for a data chunk whose digest and kind
	// an earlier chunk already had (its bytes are then shared).
	Add(i int, kind Kind, stored []byte, digest [32]byte) error
}

// ErrTooLarge is returned by ReceiveStream when a stream's image file
// would exceed its size limit.
var ErrTooLarge = errors.New("too large")

type dedupKey struct {
	digest [32]byte
	kind   Kind
}

// assembler lays out an image as chunks arrive: entries, stored offsets,
// sharing of identical chunks and the running image digest. Writer and
// StreamWriter share it, so an image received from a capture stream has
// exactly the layout the capturing side computed.
type assembler struct {
	h       Header
	entries []Entry
	first   map[dedupKey]int // first chunk with a digest and kind
	dataEnd uint64           // DataOffset + stored bytes so far
	img     hashWriter
	done    bool
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func newAssembler(rawSize int64, chunkSize int, meta Meta) (*assembler, error) {
	if rawSize <= 0 || chunkSize <= 0 || chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("image: raw size %d, chunk size %d: %w", rawSize, chunkSize, ErrCorrupt)
	}
	if err := checkGeometry(uint32(chunkSize), uint64(rawSize)); err != nil {
		return nil, fmt.Errorf("image: %v", err)
	}
	if mj, err := json.Marshal(meta); err != nil {
		return nil, fmt.Errorf("image: metadata: %w", err)
	} else if len(mj) > MaxMetaLen {
		return nil, fmt.Errorf("image: metadata is %d bytes of JSON (at most %d)", len(mj), MaxMetaLen)
	}
	chunks := chunkCount(uint32(chunkSize), uint64(rawSize))
	h := Header{
		Version:     Version,
		ChunkSize:   uint32(chunkSize),
		RawSize:     uint64(rawSize),
		Chunks:      uint32(chunks),
		IndexOffset: HeaderSize,
		IndexLen:    chunks * EntrySize,
		Meta:        meta,
	}
	h.DataOffset = roundUp(HeaderSize+h.IndexLen, blockAlign)
	return &assembler{
		h:       h,
		entries: make([]Entry, 0, min(chunks, 1<<16)),
		first:   make(map[dedupKey]int),
		dataEnd: h.DataOffset,
		img:     sha256.New(),
	}, nil
}

func roundUp(n, align uint64) uint64 { return (n + align - 1) / align * align }

// add records chunk i. It returns the new entry and, when the chunk shares
// the stored bytes of an earlier one, that chunk's number (else -1): the
// caller writes stored only when dup < 0.
func (a *assembler) add(i int, kind Kind, stored []byte, digest [32]byte) (e Entry, dup int, err error) {
	if a.done {
		return e, -1, errors.New("image: Add after Finish")
	}
	if i != len(a.entries) {
		return e, -1, fmt.Errorf("image: Add of chunk %d, expected chunk %d", i, len(a.entries))
	}
	if i >= int(a.h.Chunks) {
		return e, -1, fmt.Errorf("image: Add of chunk %d, the image has %d", i, a.h.Chunks)
	}
	off, n := rawSpan(a.h.ChunkSize, a.h.RawSize, i)
	e = Entry{Kind: kind, Digest: digest}
	dup = -1
	switch kind {
	case KindHole:
		if len(stored) != 0 {
			return e, -1, fmt.Errorf("image: chunk %d (raw offset %d): hole with %d stored bytes", i, off, len(stored))
		}
		if digest != ZeroDigest(n) {
			return e, -1, fmt.Errorf("image: chunk %d (raw offset %d): hole whose digest is not that of %d zero bytes", i, off, n)
		}
	case KindZstd, KindRaw:
		k := dedupKey{digest, kind}
		if j, ok := a.first[k]; ok {
			if _, jn := rawSpan(a.h.ChunkSize, a.h.RawSize, j); jn == n {
				dup = j
				e.Offset, e.Len = a.entries[j].Offset, a.entries[j].Len
				break
			}
		}
		if len(stored) == 0 || len(stored) > int(a.h.ChunkSize) {
			return e, -1, fmt.Errorf("image: chunk %d (raw offset %d): %s chunk of %d stored bytes (must be 1 to %d)", i, off, kind, len(stored), a.h.ChunkSize)
		}
		if kind == KindRaw && len(stored) != n {
			return e, -1, fmt.Errorf("image: chunk %d (raw offset %d): raw chunk of %d bytes, its raw length is %d", i, off, len(stored), n)
		}
		e.Offset, e.Len = a.dataEnd, uint32(len(stored))
		a.first[k] = i
		a.dataEnd += uint64(len(stored))
	default:
		return e, -1, fmt.Errorf("image: chunk %d: unknown kind %d", i, uint8(kind))
	}
	a.entries = append(a.entries, e)
	a.img.Write(digest[:])
	return e, dup, nil
}

// finish completes the header and returns the index bytes and header block.
func (a *assembler) finish() (*Index, []byte, []byte, error) {
	if a.done {
		return nil, nil, nil, errors.New("image: Finish called twice")
	}
	if len(a.entries) != int(a.h.Chunks) {
		return nil, nil, nil, fmt.Errorf("image: Finish after %d of %d chunks", len(a.entries), a.h.Chunks)
	}
	a.done = true
	ib := make([]byte, 0, a.h.IndexLen)
	for _, e := range a.entries {
		ib = appendEntry(ib, e)
	}
	a.h.DataLen = a.dataEnd - a.h.DataOffset
	a.h.IndexDigest = sha256.Sum256(ib)
	a.h.ImageDigest = [32]byte(a.img.Sum(nil))
	hb, err := marshalHeader(&a.h)
	if err != nil {
		return nil, nil, nil, err
	}
	// Parse what we built: the writer must never produce a file the
	// reader refuses.
	h, err := ParseHeader(hb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("image: built a bad header: %w", err)
	}
	entries, err := ParseIndex(h, ib)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("image: built a bad index: %w", err)
	}
	return &Index{Header: h, Entries: entries}, ib, hb, nil
}

// Writer assembles an image file: header and index space are reserved
// first, chunk data is appended in chunk order, and the index and header
// are written at Finish. Identical chunks (same raw digest and kind) are
// stored once. It is not safe for concurrent use.
type Writer struct {
	f  *os.File
	a  *assembler
	bw *bufio.Writer
}

// NewWriter starts an image of rawSize bytes in chunks of chunkSize in f.
// Whatever f held is overwritten; f is written with WriteAt only, so its
// file offset does not matter. The caller closes f (and renames it after a
// successful Finish).
func NewWriter(f *os.File, rawSize int64, chunkSize int, meta Meta) (*Writer, error) {
	a, err := newAssembler(rawSize, chunkSize, meta)
	if err != nil {
		return nil, err
	}
	// Chunks are often a few KiB after compression: buffering them saves
	// a system call each.
	bw := bufio.NewWriterSize(io.NewOffsetWriter(f, int64(a.h.DataOffset)), 1<<20)
	return &Writer{f: f, a: a, bw: bw}, nil
}

// Add appends chunk i; see Sink.
func (w *Writer) Add(i int, kind Kind, stored []byte, digest [32]byte) error {
	_, dup, err := w.a.add(i, kind, stored, digest)
	if err != nil || dup >= 0 || kind == KindHole {
		return err
	}
	if _, err := w.bw.Write(stored); err != nil {
		return fmt.Errorf("image: writing chunk %d: %w", i, err)
	}
	return nil
}

// Finish writes the index and header, truncates f to the image size and
// fsyncs it. It returns the image's index.
func (w *Writer) Finish() (*Index, error) {
	if err := w.bw.Flush(); err != nil {
		return nil, fmt.Errorf("image: writing chunk data: %w", err)
	}
	ix, ib, hb, err := w.a.finish()
	if err != nil {
		return nil, err
	}
	h := ix.Header
	prefix := make([]byte, h.DataOffset)
	copy(prefix, hb)
	copy(prefix[h.IndexOffset:], ib)
	if _, err := w.f.WriteAt(prefix, 0); err != nil {
		return nil, fmt.Errorf("image: writing header and index: %w", err)
	}
	if err := w.f.Truncate(ix.FileSize()); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return ix, nil
}

// Capture stream constants (docs/image-format.md, "Capture stream").
const (
	streamMagic = "MTFTPSTR"
	streamDup   = 3    // chunk kind: same bytes as an earlier chunk
	streamEnd   = 0xFF // after the last chunk: the image digest follows
)

// StreamWriter writes a capture stream: the image's chunks in order, each
// with its raw digest, for a server to assemble with ReceiveStream. It is a
// Sink. It is not safe for concurrent use.
type StreamWriter struct {
	bw *bufio.Writer
	a  *assembler
}

// NewStreamWriter writes the stream preamble to w (buffered; Finish
// flushes) and returns the writer for the chunks.
func NewStreamWriter(w io.Writer, rawSize int64, chunkSize int, meta Meta) (*StreamWriter, error) {
	a, err := newAssembler(rawSize, chunkSize, meta)
	if err != nil {
		return nil, err
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("image: metadata: %w", err)
	}
	sw := &StreamWriter{bw: bufio.NewWriterSize(w, 256<<10), a: a}
	b := []byte(streamMagic)
	b = binary.BigEndian.AppendUint16(b, Version)
	b = binary.BigEndian.AppendUint32(b, uint32(chunkSize))
	b = binary.BigEndian.AppendUint64(b, uint64(rawSize))
	b = binary.BigEndian.AppendUint32(b, uint32(len(mj)))
	b = append(b, mj...)
	if _, err := sw.bw.Write(b); err != nil {
		return nil, fmt.Errorf("image: writing stream preamble: %w", err)
	}
	return sw, nil
}

// Add writes chunk i; see Sink. A chunk identical to an earlier one is
// sent as a reference to it.
func (s *StreamWriter) Add(i int, kind Kind, stored []byte, digest [32]byte) error {
	e, dup, err := s.a.add(i, kind, stored, digest)
	if err != nil {
		return err
	}
	switch {
	case kind == KindHole:
		err = s.bw.WriteByte(byte(KindHole))
	case dup >= 0:
		b := binary.BigEndian.AppendUint32([]byte{streamDup}, uint32(dup))
		_, err = s.bw.Write(b)
	default:
		b := binary.BigEndian.AppendUint32([]byte{byte(kind)}, e.Len)
		b = append(b, digest[:]...)
		if _, err = s.bw.Write(b); err == nil {
			_, err = s.bw.Write(stored)
		}
	}
	if err != nil {
		return fmt.Errorf("image: writing chunk %d to the stream: %w", i, err)
	}
	return nil
}

// Finish writes the end marker and the image digest and flushes. The
// returned index is the one the receiving side's image file will have.
func (s *StreamWriter) Finish() (*Index, error) {
	ix, _, _, err := s.a.finish()
	if err != nil {
		return nil, err
	}
	b := append([]byte{streamEnd}, ix.Header.ImageDigest[:]...)
	if _, err := s.bw.Write(b); err != nil {
		return nil, fmt.Errorf("image: writing stream end: %w", err)
	}
	if err := s.bw.Flush(); err != nil {
		return nil, fmt.Errorf("image: writing stream end: %w", err)
	}
	return ix, nil
}

// countingReader counts the bytes read, for error offsets.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func (c *countingReader) full(p []byte, what string) error {
	at := c.n
	if _, err := io.ReadFull(c, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return truncated(c.n, "stream ends in %s (%d of %d bytes from byte %d)", what, c.n-at, len(p), at)
		}
		return fmt.Errorf("image: reading %s at stream byte %d: %w", what, c.n, err)
	}
	return nil
}

// ReceiveStream reads a capture stream into f through a Writer,
// decompressing and checking every chunk's digest and the image digest. It
// refuses (ErrTooLarge) a stream whose image file would exceed maxSize
// bytes, before writing past that size; chunk lengths over the chunk size,
// references to a later chunk or a hole, and trailing bytes are refused as
// corrupt. Errors say which chunk and why. Memory is bounded by a few
// chunks plus 48 bytes of index per chunk received. The caller writes f as
// a temp file and renames it only on success.
func ReceiveStream(r io.Reader, f *os.File, maxSize int64) (*Index, error) {
	cr := &countingReader{r: bufio.NewReaderSize(r, 256<<10)}
	chunkSize, rawSize, meta, err := readStreamPreamble(cr, maxSize)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(f, int64(rawSize), int(chunkSize), meta)
	if err != nil {
		return nil, err
	}
	d, err := NewDecoder()
	if err != nil {
		return nil, err
	}
	defer d.Close()
	sr := &streamReceiver{
		cr: cr, w: w, d: d, chunkSize: chunkSize, rawSize: rawSize, maxSize: maxSize,
		stored: make([]byte, chunkSize), raw: make([]byte, chunkSize),
	}
	chunks := int(chunkCount(chunkSize, rawSize))
	for i := range chunks {
		if err := sr.chunk(i, chunks); err != nil {
			return nil, err
		}
	}
	if err := sr.end(chunks); err != nil {
		return nil, err
	}
	return w.Finish()
}

// readStreamPreamble reads and checks a capture stream's magic, version,
// geometry and metadata, refusing (ErrTooLarge) a geometry whose header
// and index alone exceed maxSize.
func readStreamPreamble(cr *countingReader, maxSize int64) (chunkSize uint32, rawSize uint64, meta Meta, err error) {
	var pre [8 + 2 + 4 + 8 + 4]byte
	if err := cr.full(pre[:8], "the stream magic"); err != nil {
		return 0, 0, meta, err
	}
	if string(pre[:8]) != streamMagic {
		return 0, 0, meta, &FormatError{Offset: 0, What: "stream magic is not " + streamMagic, Err: ErrNotImage}
	}
	if err := cr.full(pre[8:], "the stream preamble"); err != nil {
		return 0, 0, meta, err
	}
	be := binary.BigEndian
	if v := be.Uint16(pre[8:]); v != Version {
		return 0, 0, meta, corrupt(8, "stream version %d (this build reads version %d)", v, Version)
	}
	chunkSize, rawSize, metaLen := be.Uint32(pre[10:]), be.Uint64(pre[14:]), be.Uint32(pre[22:])
	if err := checkGeometry(chunkSize, rawSize); err != nil {
		return 0, 0, meta, corrupt(10, "%v", err)
	}
	if metaLen > MaxMetaLen {
		return 0, 0, meta, corrupt(22, "metadata length %d (at most %d)", metaLen, MaxMetaLen)
	}
	chunks := chunkCount(chunkSize, rawSize)
	if prefix := roundUp(HeaderSize+chunks*EntrySize, blockAlign); prefix > uint64(maxSize) {
		return 0, 0, meta, &FormatError{Offset: 14, Err: ErrTooLarge,
			What: fmt.Sprintf("raw size %d in %d chunks needs a %d-byte header and index; the limit is %d bytes", rawSize, chunks, prefix, maxSize)}
	}
	mj := make([]byte, metaLen)
	if err := cr.full(mj, "the metadata"); err != nil {
		return 0, 0, meta, err
	}
	if metaLen > 0 {
		if err := json.Unmarshal(mj, &meta); err != nil {
			return 0, 0, meta, corrupt(26, "metadata JSON: %v", err)
		}
	}
	return chunkSize, rawSize, meta, nil
}

// streamReceiver is ReceiveStream's state between chunks: the stream, the
// Writer the chunks go to, and buffers of one chunk each.
type streamReceiver struct {
	cr          *countingReader
	w           *Writer
	d           *Decoder
	chunkSize   uint32
	rawSize     uint64
	maxSize     int64
	stored, raw []byte
	eh          [4 + 32]byte
}

// chunk reads chunk i of chunks from the stream and adds it to the Writer.
func (sr *streamReceiver) chunk(i, chunks int) error {
	_, n := rawSpan(sr.chunkSize, sr.rawSize, i)
	at := sr.cr.n
	kind, err := sr.cr.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return truncated(at, "stream ends before chunk %d of %d", i, chunks)
		}
		return fmt.Errorf("image: reading chunk %d at stream byte %d: %w", i, at, err)
	}
	switch kind {
	case byte(KindHole):
		return sr.w.Add(i, KindHole, nil, ZeroDigest(n))
	case streamDup:
		return sr.dup(i, n, at)
	case byte(KindZstd), byte(KindRaw):
		return sr.data(i, Kind(kind), at)
	case streamEnd:
		return corrupt(at, "stream ends after %d of %d chunks", i, chunks)
	default:
		return corrupt(at, "chunk %d: unknown kind %d", i, kind)
	}
}

// dup adds chunk i (n raw bytes, kind byte at stream byte at) as a copy of
// the earlier, same-length, non-hole chunk its reference names.
func (sr *streamReceiver) dup(i, n int, at int64) error {
	if err := sr.cr.full(sr.eh[:4], fmt.Sprintf("chunk %d's reference", i)); err != nil {
		return err
	}
	ref := binary.BigEndian.Uint32(sr.eh[:])
	if ref >= uint32(i) {
		return corrupt(at, "chunk %d refers to chunk %d (must be an earlier chunk)", i, ref)
	}
	re := sr.w.a.entries[ref]
	if re.Kind == KindHole {
		return corrupt(at, "chunk %d refers to chunk %d, a hole", i, ref)
	}
	if _, rn := rawSpan(sr.chunkSize, sr.rawSize, int(ref)); rn != n {
		return corrupt(at, "chunk %d (%d raw bytes) refers to chunk %d (%d raw bytes)", i, n, ref, rn)
	}
	return sr.w.Add(i, re.Kind, nil, re.Digest)
}

// data reads chunk i's stored bytes (kind byte at stream byte at),
// decodes them, checks their digest and adds the chunk.
func (sr *streamReceiver) data(i int, kind Kind, at int64) error {
	off, n := rawSpan(sr.chunkSize, sr.rawSize, i)
	if err := sr.cr.full(sr.eh[:], fmt.Sprintf("chunk %d's length and digest", i)); err != nil {
		return err
	}
	sl := binary.BigEndian.Uint32(sr.eh[:])
	if sl == 0 || sl > sr.chunkSize || (kind == KindRaw && int(sl) != n) {
		return corrupt(at, "chunk %d: %s chunk of %d stored bytes (raw length %d, chunk size %d)", i, kind, sl, n, sr.chunkSize)
	}
	if end := sr.w.a.dataEnd + uint64(sl); end > uint64(sr.maxSize) {
		return &FormatError{Offset: at, Err: ErrTooLarge,
			What: fmt.Sprintf("chunk %d would make the image %d bytes; the limit is %d bytes", i, end, sr.maxSize)}
	}
	stored := sr.stored[:sl]
	if err := sr.cr.full(stored, fmt.Sprintf("chunk %d's stored bytes", i)); err != nil {
		return err
	}
	want := [32]byte(sr.eh[4:])
	out, derr := sr.d.decode(kind, stored, n, sr.raw)
	if derr != nil {
		return fmt.Errorf("image: chunk %d (raw offset %d, stream byte %d): %w", i, off, at, derr)
	}
	if got := sha256.Sum256(out); got != want {
		return &ChunkError{Chunk: i, RawOffset: off, Want: want, Got: got}
	}
	return sr.w.Add(i, kind, stored, want)
}

// end reads the end marker and image digest after the last of chunks,
// checks the digest against the chunks received, and refuses trailing
// bytes.
func (sr *streamReceiver) end(chunks int) error {
	at := sr.cr.n
	var end [1 + 32]byte
	if err := sr.cr.full(end[:], "the end marker and image digest"); err != nil {
		return err
	}
	if end[0] != streamEnd {
		return corrupt(at, "byte %#02x after the last chunk (want the end marker %#02x)", end[0], streamEnd)
	}
	got := ImageDigest(func(i int) [32]byte { return sr.w.a.entries[i].Digest }, chunks)
	if want := [32]byte(end[1:]); got != want {
		return corrupt(at+1, "image digest in the stream is %x, the chunks make %x", want, got)
	}
	if _, err := sr.cr.ReadByte(); !errors.Is(err, io.EOF) {
		if err != nil {
			return fmt.Errorf("image: reading past the stream end: %w", err)
		}
		return corrupt(sr.cr.n-1, "data after the stream end")
	}
	return nil
}
