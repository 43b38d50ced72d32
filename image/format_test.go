package image

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// buildImage assembles an image in memory from raw chunk contents (nil =
// hole), zstd-compressing each data chunk. It is the reference the other
// tests compare the Writer against.
func buildImage(t testing.TB, chunkSize int, rawSize int64, chunks [][]byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	n := len(chunks)
	h := Header{Version: Version, ChunkSize: uint32(chunkSize), RawSize: uint64(rawSize), Chunks: uint32(n),
		IndexOffset: HeaderSize, IndexLen: uint64(n) * EntrySize, Meta: Meta{Created: time.Unix(1700000000, 0).UTC(), Source: "test"}}
	h.DataOffset = (HeaderSize + h.IndexLen + 4095) &^ 4095
	var data, index []byte
	var digests [][32]byte
	for i, c := range chunks {
		_, rn := rawSpan(h.ChunkSize, h.RawSize, i)
		var e Entry
		if c == nil {
			e = Entry{Kind: KindHole, Digest: ZeroDigest(rn)}
		} else {
			z := enc.EncodeAll(c, nil)
			e = Entry{Offset: h.DataOffset + uint64(len(data)), Len: uint32(len(z)), Kind: KindZstd, Digest: sha256.Sum256(c)}
			data = append(data, z...)
		}
		digests = append(digests, e.Digest)
		index = appendEntry(index, e)
	}
	h.DataLen = uint64(len(data))
	h.IndexDigest = sha256.Sum256(index)
	h.ImageDigest = ImageDigest(func(i int) [32]byte { return digests[i] }, n)
	hb, err := marshalHeader(&h)
	if err != nil {
		t.Fatal(err)
	}
	out := append(hb, index...)
	out = append(out, make([]byte, int(h.DataOffset)-len(out))...)
	return append(out, data...)
}

func TestReadIndexDecode(t *testing.T) {
	cs := MinChunkSize
	a := bytes.Repeat([]byte("abcdefgh"), cs/8)
	last := []byte("tail bytes")
	img := buildImage(t, cs, int64(2*cs+len(last)), [][]byte{a, nil, last})
	r := bytes.NewReader(img)
	ix, err := ReadIndex(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := int64(len(img)) - int64(r.Len()); got != ix.PrefixLen() {
		t.Fatalf("ReadIndex consumed %d bytes, PrefixLen %d", got, ix.PrefixLen())
	}
	if ix.FileSize() != int64(len(img)) {
		t.Fatalf("FileSize %d, file is %d", ix.FileSize(), len(img))
	}
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i, want := range [][]byte{a, make([]byte, cs), last} {
		e := ix.Entries[i]
		var stored []byte
		if e.Kind != KindHole {
			stored = img[e.Offset : e.Offset+uint64(e.Len)]
		}
		got, err := d.Decode(ix, i, stored, nil)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: decoded bytes differ", i)
		}
	}
	// Damage chunk 0's frame so it still decodes (a literal byte): the
	// digest check must name chunk 0.
	e := ix.Entries[0]
	bad := bytes.Clone(img[e.Offset : e.Offset+uint64(e.Len)])
	if _, err := d.Decode(ix, 2, bad, nil); err == nil || !strings.Contains(err.Error(), "chunk 2") {
		t.Fatalf("wrong stored length: %v", err)
	}
	bad[len(bad)/2] ^= 0x55
	_, err = d.Decode(ix, 0, bad, nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "chunk 0 (raw offset 0)") {
		t.Fatalf("damaged chunk: %v", err)
	}
}

func TestZeroDigest(t *testing.T) {
	for _, n := range []int{0, 1, MinChunkSize, DefaultChunkSize, DefaultChunkSize + 3} {
		if got, want := ZeroDigest(n), sha256.Sum256(make([]byte, n)); got != want {
			t.Errorf("ZeroDigest(%d) = %x, want %x", n, got, want)
		}
		if got, want := ZeroDigest(n), sha256.Sum256(make([]byte, n)); got != want {
			t.Errorf("cached ZeroDigest(%d) = %x, want %x", n, got, want)
		}
	}
}

// TestDecodeBounded: frames that decode to 64 MiB, handed to the decoder
// as a 64 KiB chunk, fail without the decoder allocating more than a small
// multiple of the chunk (the output is capped at the raw length).
func TestDecodeBounded(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 64<<20)
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	var streamed bytes.Buffer // no content size in the frame header
	w, _ := zstd.NewWriter(&streamed, zstd.WithWindowSize(8<<20))
	w.Write(big)
	w.Close()
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dst := make([]byte, MinChunkSize)
	for _, frame := range [][]byte{enc.EncodeAll(big, nil), streamed.Bytes()} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := d.decode(KindZstd, frame, MinChunkSize, dst)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a %d-byte frame of 64 MiB decoded as a 64 KiB chunk: %v", len(frame), err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Errorf("decoding a %d-byte frame of 64 MiB allocated %d bytes", len(frame), grew)
		}
	}
}
