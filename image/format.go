// Package image reads and writes mtftpd disk images: a 4096-byte header, an
// index of one 48-byte entry per chunk (raw SHA-256, kind, stored range),
// then each chunk's bytes compressed on its own with zstd. The index comes
// before the data so a receiver knows every chunk's place and digest before
// the first data byte arrives; chunks decode independently, so they can be
// written to a disk in any order. docs/image-format.md describes the format
// and why it looks like this.
//
// Everything read from an image or a capture stream is untrusted: parsers
// bound every allocation by the sizes the format allows (never by a length
// field alone) and return a *FormatError or *ChunkError naming the byte
// offset or chunk at fault. It writes to a disk only through a Target from
// OpenTarget, which refuses one that is too small, mounted, held or the
// running system's, and never writes a chunk that failed its digest.
package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Sizes fixed by format version 1 (docs/image-format.md).
const (
	HeaderSize       = 4096
	EntrySize        = 48
	DefaultChunkSize = 1 << 20
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 16 << 20

	// Version is the only format version this package reads and writes.
	Version = 1
	// MaxMetaLen bounds the metadata JSON: it must fit the header block
	// after the 160 fixed bytes (4096-160 = 3936; 3072 leaves room for
	// fields a later version may add).
	MaxMetaLen = 3072

	// maxChunks bounds the index a header may announce: 16 Mi chunks is a
	// 16 TiB disk at the default chunk size, and a 768 MiB index. Readers
	// never allocate for more than this, whatever a header says.
	maxChunks = 1 << 24

	magic       = "MTFTPIMG"
	metaOffset  = 160
	blockAlign  = 4096
	digestSize  = sha256.Size
	offImageDig = 64
	offIndexDig = 96
	offHdrDig   = 128
)

// Kind says how a chunk is stored.
type Kind uint8

const (
	KindHole Kind = 0 // all zero raw bytes, nothing stored
	KindZstd Kind = 1 // one zstd frame
	KindRaw  Kind = 2 // stored uncompressed: zstd did not shrink it
)

func (k Kind) String() string {
	switch k {
	case KindHole:
		return "hole"
	case KindZstd:
		return "zstd"
	case KindRaw:
		return "raw"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// Meta is the header's JSON metadata. It is informational: nothing in it
// changes how the image is read.
type Meta struct {
	Created        time.Time `json:"created"`
	Source         string    `json:"source,omitempty"`
	Tool           string    `json:"tool,omitempty"`            // "mtftpd <version>"
	PartitionTable string    `json:"partition_table,omitempty"` // "gpt", "dos" or ""
}

// Header is the parsed 4096-byte header block.
type Header struct {
	Version     uint16
	ChunkSize   uint32
	RawSize     uint64
	Chunks      uint32
	IndexOffset uint64
	IndexLen    uint64
	DataOffset  uint64
	DataLen     uint64
	ImageDigest [32]byte
	IndexDigest [32]byte
	Meta        Meta
}

// Entry is one chunk's index entry.
type Entry struct {
	Offset uint64 // absolute file offset of the stored bytes; 0 for a hole
	Len    uint32 // stored length; 0 for a hole
	Kind   Kind
	Digest [32]byte // SHA-256 of the chunk's raw bytes
}

// Index is a parsed and checked header and index.
type Index struct {
	Header  Header
	Entries []Entry
}

// RawSpan returns the raw (disk) offset and length of chunk i: ChunkSize
// bytes, except the last chunk, which ends at RawSize.
func (ix *Index) RawSpan(i int) (off int64, n int) {
	return rawSpan(ix.Header.ChunkSize, ix.Header.RawSize, i)
}

func rawSpan(chunkSize uint32, rawSize uint64, i int) (int64, int) {
	off := uint64(i) * uint64(chunkSize)
	n := min(uint64(chunkSize), rawSize-off)
	return int64(off), int(n)
}

// FileSize is the size of the image file: DataOffset + DataLen.
func (ix *Index) FileSize() int64 { return int64(ix.Header.DataOffset + ix.Header.DataLen) }

// PrefixLen is the number of bytes before the first chunk's data (header,
// index and padding): what a receiver must have before it can place a chunk.
func (ix *Index) PrefixLen() int64 { return int64(ix.Header.DataOffset) }

// Stats counts what an index holds.
type Stats struct {
	Holes  int   // chunks of kind hole
	Dups   int   // data chunks sharing stored bytes with an earlier chunk
	Raw    int   // chunks stored uncompressed
	Stored int64 // bytes of chunk data (DataLen)
}

// Stats counts holes, shared and uncompressed chunks.
func (ix *Index) Stats() Stats {
	s := Stats{Stored: int64(ix.Header.DataLen)}
	seen := make(map[uint64]struct{}, len(ix.Entries))
	for _, e := range ix.Entries {
		switch e.Kind {
		case KindHole:
			s.Holes++
			continue
		case KindRaw:
			s.Raw++
		}
		if _, ok := seen[e.Offset]; ok {
			s.Dups++
		} else {
			seen[e.Offset] = struct{}{}
		}
	}
	return s
}

// Sentinels wrapped by *FormatError and *ChunkError; test with errors.Is.
var (
	ErrNotImage  = errors.New("not an mtftpd image")
	ErrTruncated = errors.New("truncated")
	ErrCorrupt   = errors.New("corrupt")
)

// FormatError says where an image (or capture stream) breaks the format.
type FormatError struct {
	Offset int64  // byte offset in the file or stream
	What   string // what is wrong there, with numbers
	Err    error  // ErrNotImage, ErrTruncated or ErrCorrupt
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("image: at byte %d: %s: %v", e.Offset, e.What, e.Err)
}

func (e *FormatError) Unwrap() error { return e.Err }

func corrupt(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, What: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

func truncated(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, What: fmt.Sprintf(format, args...), Err: ErrTruncated}
}

// ChunkError is a chunk whose raw bytes do not have the digest its index
// entry (or capture stream) gives. It wraps ErrCorrupt.
type ChunkError struct {
	Chunk     int
	RawOffset int64
	Want, Got [32]byte
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("chunk %d (raw offset %d): SHA-256 is %s, the index says %s",
		e.Chunk, e.RawOffset, hex.EncodeToString(e.Got[:]), hex.EncodeToString(e.Want[:]))
}

func (e *ChunkError) Unwrap() error { return ErrCorrupt }

// ParseHeader parses and checks the 4096-byte header block b.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		if len(b) == 0 {
			return h, &FormatError{Offset: 0, What: "no bytes", Err: ErrNotImage}
		}
		if len(b) < len(magic) && string(b) == magic[:len(b)] {
			return h, truncated(int64(len(b)), "header: %d of %d bytes", len(b), HeaderSize)
		}
		return h, &FormatError{Offset: 0, What: "magic is not " + magic, Err: ErrNotImage}
	}
	if len(b) < HeaderSize {
		return h, truncated(int64(len(b)), "header: %d of %d bytes", len(b), HeaderSize)
	}
	b = b[:HeaderSize]
	be := binary.BigEndian
	h.Version = be.Uint16(b[8:])
	if h.Version != Version {
		return h, corrupt(8, "format version %d (this build reads version %d)", h.Version, Version)
	}
	if got, want := headerDigest(b), [32]byte(b[offHdrDig:]); got != want {
		return h, corrupt(offHdrDig, "header digest is %x, the header says %x", got, want)
	}
	if f := be.Uint16(b[10:]); f != 0 {
		return h, corrupt(10, "flags %#04x (version 1 defines none)", f)
	}
	h.ChunkSize = be.Uint32(b[12:])
	h.RawSize = be.Uint64(b[16:])
	h.Chunks = be.Uint32(b[24:])
	metaLen := be.Uint32(b[28:])
	h.IndexOffset = be.Uint64(b[32:])
	h.IndexLen = be.Uint64(b[40:])
	h.DataOffset = be.Uint64(b[48:])
	h.DataLen = be.Uint64(b[56:])
	h.ImageDigest = [32]byte(b[offImageDig:])
	h.IndexDigest = [32]byte(b[offIndexDig:])
	if err := checkGeometry(h.ChunkSize, h.RawSize); err != nil {
		return h, corrupt(12, "%v", err)
	}
	if want := chunkCount(h.ChunkSize, h.RawSize); uint64(h.Chunks) != want {
		return h, corrupt(24, "%d chunks, but raw size %d in chunks of %d makes %d", h.Chunks, h.RawSize, h.ChunkSize, want)
	}
	if metaLen > MaxMetaLen {
		return h, corrupt(28, "metadata length %d (at most %d)", metaLen, MaxMetaLen)
	}
	if h.IndexOffset != HeaderSize {
		return h, corrupt(32, "index offset %d (must be %d)", h.IndexOffset, HeaderSize)
	}
	if want := uint64(h.Chunks) * EntrySize; h.IndexLen != want {
		return h, corrupt(40, "index length %d, but %d chunks need %d", h.IndexLen, h.Chunks, want)
	}
	// The data starts at the first block boundary after the index, as
	// the Writer puts it: any other offset would only be padding a reader
	// has to skip (2^62 bytes of it, from a hostile header).
	if want := roundUp(HeaderSize+h.IndexLen, blockAlign); h.DataOffset != want {
		return h, corrupt(48, "data offset %d (the index ends at %d: the data starts at %d)", h.DataOffset, HeaderSize+h.IndexLen, want)
	}
	if h.DataLen > maxFileSize-h.DataOffset {
		return h, corrupt(56, "data length %d after offset %d is beyond any file size", h.DataLen, h.DataOffset)
	}
	meta := b[metaOffset : metaOffset+metaLen]
	if i := bytes.IndexFunc(b[metaOffset+metaLen:], func(r rune) bool { return r != 0 }); i >= 0 {
		return h, corrupt(int64(metaOffset+int(metaLen)+i), "nonzero byte after the %d-byte metadata", metaLen)
	}
	if metaLen > 0 {
		if err := json.Unmarshal(meta, &h.Meta); err != nil {
			return h, corrupt(metaOffset, "metadata JSON: %v", err)
		}
	}
	return h, nil
}

// maxFileSize keeps every offset computation far from overflowing int64.
const maxFileSize = 1 << 62

// checkGeometry checks a chunk size and raw size from a header or stream.
func checkGeometry(chunkSize uint32, rawSize uint64) error {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize || bits.OnesCount32(chunkSize) != 1 {
		return fmt.Errorf("chunk size %d (must be a power of two from %d to %d)", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if rawSize == 0 {
		return errors.New("raw size 0")
	}
	if n := chunkCount(chunkSize, rawSize); n > maxChunks {
		return fmt.Errorf("raw size %d in chunks of %d makes %d chunks (at most %d)", rawSize, chunkSize, n, maxChunks)
	}
	return nil
}

func chunkCount(chunkSize uint32, rawSize uint64) uint64 {
	return rawSize/uint64(chunkSize) + min(rawSize%uint64(chunkSize), 1)
}

func headerDigest(b []byte) [32]byte {
	h := sha256.New()
	h.Write(b[:offHdrDig])
	h.Write(make([]byte, digestSize))
	h.Write(b[offHdrDig+digestSize : HeaderSize])
	return [32]byte(h.Sum(nil))
}

// ParseIndex parses and checks the index bytes b (exactly h.IndexLen of
// them) against header h, including the image digest.
func ParseIndex(h Header, b []byte) ([]Entry, error) {
	if uint64(len(b)) != h.IndexLen {
		return nil, truncated(int64(h.IndexOffset)+int64(len(b)), "index: %d of %d bytes", len(b), h.IndexLen)
	}
	if got := sha256.Sum256(b); got != h.IndexDigest {
		return nil, corrupt(int64(h.IndexOffset), "index digest is %x, the header says %x", got, h.IndexDigest)
	}
	entries := make([]Entry, h.Chunks)
	img := sha256.New()
	be := binary.BigEndian
	for i := range entries {
		eb := b[i*EntrySize : (i+1)*EntrySize]
		at := int64(h.IndexOffset) + int64(i)*EntrySize
		e := Entry{Offset: be.Uint64(eb), Len: be.Uint32(eb[8:]), Kind: Kind(eb[12]), Digest: [32]byte(eb[16:])}
		if eb[13]|eb[14]|eb[15] != 0 {
			return nil, corrupt(at+13, "index entry %d: nonzero reserved bytes", i)
		}
		if err := checkEntry(h, i, e); err != nil {
			return nil, corrupt(at, "index entry %d: %v", i, err)
		}
		entries[i] = e
		img.Write(e.Digest[:])
	}
	if got := [32]byte(img.Sum(nil)); got != h.ImageDigest {
		return nil, corrupt(offImageDig, "image digest recomputed from the index is %x, the header says %x", got, h.ImageDigest)
	}
	return entries, nil
}

func checkEntry(h Header, i int, e Entry) error {
	_, n := rawSpan(h.ChunkSize, h.RawSize, i)
	switch e.Kind {
	case KindHole:
		if e.Offset != 0 || e.Len != 0 {
			return fmt.Errorf("hole with stored range %d+%d (must be 0+0)", e.Offset, e.Len)
		}
		if e.Digest != ZeroDigest(n) {
			return fmt.Errorf("hole whose digest %x is not that of %d zero bytes", e.Digest, n)
		}
		return nil
	case KindZstd, KindRaw:
	default:
		return fmt.Errorf("unknown kind %d", uint8(e.Kind))
	}
	if e.Len == 0 || e.Len > h.ChunkSize {
		return fmt.Errorf("%s chunk stored length %d (must be 1 to %d)", e.Kind, e.Len, h.ChunkSize)
	}
	if e.Kind == KindRaw && int(e.Len) != n {
		return fmt.Errorf("raw chunk stored length %d (its raw length is %d)", e.Len, n)
	}
	if e.Offset < h.DataOffset || e.Offset > h.DataOffset+h.DataLen || uint64(e.Len) > h.DataOffset+h.DataLen-e.Offset {
		return fmt.Errorf("stored range %d+%d outside the data %d+%d", e.Offset, e.Len, h.DataOffset, h.DataLen)
	}
	return nil
}

// ReadIndex reads the header and index from the start of r, checks them,
// and then discards the padding up to DataOffset: on success r has given
// exactly PrefixLen bytes and the next byte is the first of the data. It
// never reads past DataOffset, and it allocates no more for the index than
// the bytes r actually delivers.
func ReadIndex(r io.Reader) (*Index, error) {
	hb := make([]byte, HeaderSize)
	n, err := io.ReadFull(r, hb)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("image: reading header: %w", err)
	}
	h, perr := ParseHeader(hb[:n])
	if perr != nil {
		return nil, perr
	}
	ib, err := readGrowing(r, h.IndexLen)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("image: reading index: %w", err)
	}
	entries, perr := ParseIndex(h, ib)
	if perr != nil {
		return nil, perr
	}
	pad := int64(h.DataOffset - h.IndexOffset - h.IndexLen)
	if m, err := io.CopyN(io.Discard, r, pad); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, truncated(int64(h.IndexOffset+h.IndexLen)+m, "padding before the data at %d", h.DataOffset)
		}
		return nil, fmt.Errorf("image: reading padding: %w", err)
	}
	return &Index{Header: h, Entries: entries}, nil
}

// readGrowing reads n bytes from r into a buffer that grows as bytes
// arrive (1 MiB steps), so a header that lies about the index length costs
// no more memory than the bytes behind it.
func readGrowing(r io.Reader, n uint64) ([]byte, error) {
	const step = 1 << 20
	b := make([]byte, 0, min(n, step))
	for uint64(len(b)) < n {
		if len(b) == cap(b) {
			b = append(b[:cap(b)], make([]byte, min(n-uint64(len(b)), uint64(cap(b))))...)[:len(b)]
		}
		m, err := r.Read(b[len(b):min(uint64(cap(b)), n)])
		b = b[:len(b)+m]
		if err != nil {
			if errors.Is(err, io.EOF) && uint64(len(b)) < n {
				return b, io.ErrUnexpectedEOF
			}
			if uint64(len(b)) == n && errors.Is(err, io.EOF) {
				return b, nil
			}
			return b, err
		}
	}
	return b, nil
}

var zeroDigests sync.Map // int -> [32]byte, for the power-of-two chunk sizes

// ZeroDigest is the SHA-256 of n zero bytes: a hole's digest. Digests of
// the legal chunk sizes are computed once and cached.
func ZeroDigest(n int) [32]byte {
	cache := n >= MinChunkSize && n <= MaxChunkSize && bits.OnesCount(uint(n)) == 1
	if cache {
		if d, ok := zeroDigests.Load(n); ok {
			return d.([32]byte)
		}
	}
	h := sha256.New()
	z := zeroes()
	for left := n; left > 0; {
		k := min(left, len(z))
		h.Write(z[:k])
		left -= k
	}
	d := [32]byte(h.Sum(nil))
	if cache {
		zeroDigests.Store(n, d)
	}
	return d
}

var zeroes = sync.OnceValue(func() []byte { return make([]byte, MaxChunkSize) })

// ImageDigest is the SHA-256 over the raw digests of chunks 0..n-1,
// concatenated in chunk order (holes included, as ZeroDigest).
func ImageDigest(digests func(i int) [32]byte, n int) [32]byte {
	h := sha256.New()
	for i := range n {
		d := digests(i)
		h.Write(d[:])
	}
	return [32]byte(h.Sum(nil))
}

// marshalHeader builds the 4096-byte header block for h, digest included.
func marshalHeader(h *Header) ([]byte, error) {
	meta, err := json.Marshal(h.Meta)
	if err != nil {
		return nil, fmt.Errorf("image: metadata: %w", err)
	}
	if len(meta) > MaxMetaLen {
		return nil, fmt.Errorf("image: metadata is %d bytes of JSON (at most %d)", len(meta), MaxMetaLen)
	}
	b := make([]byte, HeaderSize)
	be := binary.BigEndian
	copy(b, magic)
	be.PutUint16(b[8:], h.Version)
	be.PutUint32(b[12:], h.ChunkSize)
	be.PutUint64(b[16:], h.RawSize)
	be.PutUint32(b[24:], h.Chunks)
	be.PutUint32(b[28:], uint32(len(meta)))
	be.PutUint64(b[32:], h.IndexOffset)
	be.PutUint64(b[40:], h.IndexLen)
	be.PutUint64(b[48:], h.DataOffset)
	be.PutUint64(b[56:], h.DataLen)
	copy(b[offImageDig:], h.ImageDigest[:])
	copy(b[offIndexDig:], h.IndexDigest[:])
	copy(b[metaOffset:], meta)
	d := headerDigest(b)
	copy(b[offHdrDig:], d[:])
	return b, nil
}

// appendEntry appends e's 48 bytes to b.
func appendEntry(b []byte, e Entry) []byte {
	b = binary.BigEndian.AppendUint64(b, e.Offset)
	b = binary.BigEndian.AppendUint32(b, e.Len)
	b = append(b, byte(e.Kind), 0, 0, 0)
	return append(b, e.Digest[:]...)
}

// Decoder decodes and verifies one chunk at a time. It is not safe for
// concurrent use: use one per goroutine.
type Decoder struct {
	zd *zstd.Decoder
}

// NewDecoder returns a Decoder whose zstd state is bounded for hostile
// frames: a frame may not announce a window over MaxChunkSize, and output
// is capped at the chunk's raw length (decoding into a buffer of exactly
// that capacity), so a frame can make it allocate at most about twice the
// chunk size.
func NewDecoder() (*Decoder, error) {
	zd, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.WithDecoderMaxWindow(MaxChunkSize),
		zstd.WithDecodeAllCapLimit(true),
		zstd.IgnoreChecksum(true), // the SHA-256 of the raw bytes is checked instead
	)
	if err != nil {
		return nil, fmt.Errorf("image: zstd decoder: %w", err)
	}
	return &Decoder{zd: zd}, nil
}

// Close releases the decoder's zstd state.
func (d *Decoder) Close() { d.zd.Close() }

// Decode returns chunk i's raw bytes, checked against the index digest.
// stored is exactly Entries[i].Len bytes (nil for a hole). The result uses
// dst's storage if it is big enough, else a new buffer; stored is not
// retained. A digest mismatch is a *ChunkError; a zstd error names the
// chunk too and wraps ErrCorrupt.
func (d *Decoder) Decode(ix *Index, i int, stored, dst []byte) ([]byte, error) {
	if i < 0 || i >= len(ix.Entries) {
		return nil, fmt.Errorf("image: chunk %d out of range (the image has %d)", i, len(ix.Entries))
	}
	e := ix.Entries[i]
	off, n := ix.RawSpan(i)
	if len(stored) != int(e.Len) {
		return nil, fmt.Errorf("image: chunk %d (raw offset %d): %d stored bytes given, the index says %d", i, off, len(stored), e.Len)
	}
	raw, err := d.decode(e.Kind, stored, n, dst)
	if err != nil {
		return nil, fmt.Errorf("image: chunk %d (raw offset %d): %w", i, off, err)
	}
	if e.Kind == KindHole {
		return raw, nil // the index check proved the digest is that of zeros
	}
	if got := sha256.Sum256(raw); got != e.Digest {
		return nil, &ChunkError{Chunk: i, RawOffset: off, Want: e.Digest, Got: got}
	}
	return raw, nil
}

// decode turns stored bytes of the given kind into exactly n raw bytes.
func (d *Decoder) decode(kind Kind, stored []byte, n int, dst []byte) ([]byte, error) {
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	switch kind {
	case KindHole:
		dst = dst[:n]
		clear(dst)
		return dst, nil
	case KindRaw:
		if len(stored) != n {
			return nil, fmt.Errorf("%w: raw chunk of %d bytes, its raw length is %d", ErrCorrupt, len(stored), n)
		}
		return append(dst[:0], stored...), nil
	case KindZstd:
		// Capacity exactly n: WithDecodeAllCapLimit stops the decoder at
		// the raw length instead of growing the buffer.
		out, err := d.zd.DecodeAll(stored, dst[:0:n])
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
		}
		if len(out) != n {
			return nil, fmt.Errorf("%w: zstd frame decodes to %d bytes, the raw length is %d", ErrCorrupt, len(out), n)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown kind %d", ErrCorrupt, uint8(kind))
}
