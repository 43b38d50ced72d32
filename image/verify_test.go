package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// smallDisk is 5 chunks of MinChunkSize and a short tail: text (zstd),
// random bytes (stored raw), zeros (hole), the text again (shared), more
// text, and 1000 bytes of tail.
func smallDisk() []byte {
	cs := MinChunkSize
	rng := rand.New(rand.NewPCG(5, 6))
	text := func(seed string) []byte {
		return bytes.Repeat([]byte(seed), cs/len(seed)+1)[:cs]
	}
	random := make([]byte, cs)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	var d []byte
	d = append(d, text("chunk zero text. ")...)
	d = append(d, random...)
	d = append(d, make([]byte, cs)...)
	d = append(d, text("chunk zero text. ")...)
	d = append(d, text("another text chunk; ")...)
	d = append(d, bytes.Repeat([]byte("tail"), 250)...)
	return d
}

var testMeta = Meta{Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Source: "/dev/test", Tool: "mtftpd test"}

// smallImage writes smallDisk as an image file and returns its path, bytes
// and index.
func smallImage(t testing.TB) (string, []byte, *Index) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "small.img")
	ix, err := WriteFile(context.Background(), &memSource{b: smallDisk()}, path, testMeta, CreateOptions{ChunkSize: MinChunkSize, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b, ix
}

func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bad.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSmallImageLayout(t *testing.T) {
	path, _, ix := smallImage(t)
	want := []Kind{KindZstd, KindRaw, KindHole, KindZstd, KindZstd, KindZstd}
	for i, k := range want {
		if ix.Entries[i].Kind != k {
			t.Errorf("chunk %d is %v, want %v", i, ix.Entries[i].Kind, k)
		}
	}
	if ix.Entries[3].Offset != ix.Entries[0].Offset {
		t.Error("chunk 3 does not share chunk 0's bytes")
	}
	if ix.Header.Meta != testMeta {
		t.Errorf("meta %+v", ix.Header.Meta)
	}
	if _, err := Verify(context.Background(), path, 3, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := decodeAll(t, path)
	if !bytes.Equal(got, smallDisk()) {
		t.Fatal("decoded bytes differ")
	}
}

// TestBadImages damages a good image in each way the format can break and
// checks each error names the place and the reason.
func TestBadImages(t *testing.T) {
	_, good, ix := smallImage(t)
	flip := func(off int) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x40
		return b
	}
	random := make([]byte, 8192)
	rand.NewChaCha8([32]byte{7}).Read(random)
	qcow2 := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 8192)...)
	lastData := len(ix.Entries) - 1
	rawChunk := ix.Entries[1]
	zChunk := ix.Entries[4]

	for _, tc := range []struct {
		name  string
		b     []byte
		is    error
		wants []string
	}{
		{"empty", nil, ErrNotImage, []string{"not an mtftpd image"}},
		{"random bytes", random, ErrNotImage, []string{"at byte 0", "not an mtftpd image"}},
		{"qcow2", qcow2, ErrNotImage, []string{"not an mtftpd image"}},
		{"truncated in magic", good[:5], ErrTruncated, []string{"header: 5 of 4096 bytes"}},
		{"truncated in header", good[:100], ErrTruncated, []string{"at byte 100", "header: 100 of 4096 bytes", "truncated"}},
		{"truncated in index", good[:4096+50], ErrTruncated, []string{"at byte 4146", fmt.Sprintf("index: 50 of %d bytes", len(ix.Entries)*EntrySize)}},
		{"truncated in padding", good[:4096+len(ix.Entries)*EntrySize+10], ErrTruncated, []string{"padding"}},
		{"truncated in data", good[:len(good)-10], ErrTruncated, []string{
			fmt.Sprintf("the file is %d bytes, the header says %d", len(good)-10, len(good)),
			fmt.Sprintf("chunk %d's stored bytes %d+%d", lastData, ix.Entries[lastData].Offset, ix.Entries[lastData].Len)}},
		{"trailing bytes", append(bytes.Clone(good), 0), ErrCorrupt, []string{"1 bytes after the end of the data"}},
		{"flipped raw size byte", flip(20), ErrCorrupt, []string{"at byte 128", "header digest"}},
		{"flipped metadata byte", flip(170), ErrCorrupt, []string{"header digest"}},
		{"flipped version", flip(9), ErrCorrupt, []string{"at byte 8", "format version 65"}},
		{"flipped magic", flip(3), ErrNotImage, []string{"not an mtftpd image"}},
		{"flipped index byte", flip(4096 + EntrySize + 20), ErrCorrupt, []string{"at byte 4096", "index digest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(context.Background(), writeTemp(t, tc.b), 2, nil)
			checkErr(t, err, tc.is, tc.wants...)
		})
	}

	t.Run("flipped byte in a raw chunk", func(t *testing.T) {
		b := flip(int(rawChunk.Offset) + 1000)
		_, err := Verify(context.Background(), writeTemp(t, b), 2, nil)
		var ce *ChunkError
		if !errors.As(err, &ce) {
			t.Fatalf("%v is not a *ChunkError", err)
		}
		got := sha256.Sum256(b[rawChunk.Offset : rawChunk.Offset+uint64(rawChunk.Len)])
		if ce.Chunk != 1 || ce.RawOffset != MinChunkSize || ce.Want != rawChunk.Digest || ce.Got != got {
			t.Fatalf("%+v", ce)
		}
		checkErr(t, err, ErrCorrupt, "chunk 1 (raw offset 65536)", hex.EncodeToString(got[:]), hex.EncodeToString(rawChunk.Digest[:]))
	})
	t.Run("flipped byte in a zstd chunk", func(t *testing.T) {
		b := flip(int(zChunk.Offset) + int(zChunk.Len)/2)
		_, err := Verify(context.Background(), writeTemp(t, b), 2, nil)
		checkErr(t, err, ErrCorrupt, "chunk 4 (raw offset 262144)")
	})
}

func checkErr(t *testing.T, err error, is error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if !errors.Is(err, is) {
		t.Errorf("error %q is not %v", err, is)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

// reseal recomputes the index digest, image digest and header digest of an
// image prefix after a test edited its fields, so the parser's other rules
// are reached.
func reseal(b []byte, chunks int) {
	idx := b[HeaderSize : HeaderSize+chunks*EntrySize]
	d := sha256.Sum256(idx)
	copy(b[offIndexDig:], d[:])
	img := sha256.New()
	for i := range chunks {
		img.Write(idx[i*EntrySize+16 : (i+1)*EntrySize])
	}
	copy(b[offImageDig:], img.Sum(nil))
	hd := headerDigest(b)
	copy(b[offHdrDig:], hd[:])
}

// TestParseRules breaks each header and index rule with the digests kept
// valid, so each rule's own check must catch it.
func TestParseRules(t *testing.T) {
	_, good, ix := smallImage(t)
	n := len(ix.Entries)
	be := binary.BigEndian
	entry := func(i int) int { return HeaderSize + i*EntrySize }
	for _, tc := range []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"flags", func(b []byte) { be.PutUint16(b[10:], 1) }, "at byte 10: flags 0x0001"},
		{"chunk size not a power of two", func(b []byte) { be.PutUint32(b[12:], 3<<16) }, "chunk size 196608"},
		{"chunk size too big", func(b []byte) { be.PutUint32(b[12:], 32<<20) }, "chunk size 33554432"},
		{"raw size 0", func(b []byte) { be.PutUint64(b[16:], 0) }, "raw size 0"},
		{"chunk count", func(b []byte) { be.PutUint32(b[24:], uint32(n+1)) }, fmt.Sprintf("%d chunks, but raw size", n+1)},
		{"metadata length", func(b []byte) { be.PutUint32(b[28:], 4000) }, "metadata length 4000"},
		{"index offset", func(b []byte) { be.PutUint64(b[32:], 8192) }, "index offset 8192"},
		{"index length", func(b []byte) { be.PutUint64(b[40:], 48) }, "index length 48"},
		{"data offset unaligned", func(b []byte) { be.PutUint64(b[48:], 4097) }, "data offset 4097"},
		{"data length huge", func(b []byte) { be.PutUint64(b[56:], 1<<63) }, "beyond any file size"},
		{"metadata JSON", func(b []byte) { b[metaOffset] = '[' }, "metadata JSON"},
		{"padding after metadata", func(b []byte) { b[HeaderSize-1] = 1 }, "at byte 4095: nonzero byte after"},
		{"unknown kind", func(b []byte) { b[entry(0)+12] = 9 }, "index entry 0: unknown kind 9"},
		{"reserved bytes", func(b []byte) { b[entry(1)+14] = 1 }, "index entry 1: nonzero reserved"},
		{"hole with offset", func(b []byte) { be.PutUint64(b[entry(2):], 8192) }, "index entry 2: hole with stored range 8192+0"},
		{"hole digest", func(b []byte) { b[entry(2)+20] ^= 1 }, "index entry 2: hole whose digest"},
		{"stored past the data", func(b []byte) { be.PutUint32(b[entry(5)+8:], MinChunkSize) }, "index entry 5: stored range"},
		{"stored before the data", func(b []byte) { be.PutUint64(b[entry(4):], 100) }, "index entry 4: stored range 100+"},
		{"zero length", func(b []byte) { be.PutUint32(b[entry(4)+8:], 0) }, "index entry 4: zstd chunk stored length 0"},
		{"raw length", func(b []byte) { be.PutUint32(b[entry(1)+8:], 100) }, "index entry 1: raw chunk stored length 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(good)
			tc.edit(b)
			reseal(b, n)
			_, err := ReadIndex(bytes.NewReader(b))
			checkErr(t, err, ErrCorrupt, tc.want)
		})
	}
	t.Run("image digest", func(t *testing.T) {
		b := bytes.Clone(good)
		b[offImageDig] ^= 1
		hd := headerDigest(b)
		copy(b[offHdrDig:], hd[:])
		_, err := ReadIndex(bytes.NewReader(b))
		checkErr(t, err, ErrCorrupt, "at byte 64: image digest recomputed from the index")
	})
}

// TestReadIndexBounded: a header announcing the largest index the format
// allows, followed by nothing, must not allocate that index.
func TestReadIndexBounded(t *testing.T) {
	h := Header{Version: Version, ChunkSize: MinChunkSize, RawSize: maxChunks * MinChunkSize, Chunks: maxChunks,
		IndexOffset: HeaderSize, IndexLen: maxChunks * EntrySize, DataOffset: HeaderSize + maxChunks*EntrySize}
	hb, err := marshalHeader(&h)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = ReadIndex(bytes.NewReader(hb))
	runtime.ReadMemStats(&after)
	checkErr(t, err, ErrTruncated, "index: 0 of 805306368 bytes")
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Fatalf("ReadIndex of a 4 KiB input allocated %d bytes", grew)
	}
}
