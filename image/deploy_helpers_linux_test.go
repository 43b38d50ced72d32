package image

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// encodeImage makes an image file of raw through the package's Writer,
// as `image create` would: zero chunks are holes, identical chunks share
// stored bytes (the Writer's dedup), a chunk zstd does not shrink is
// stored raw.
func encodeImage(t testing.TB, raw []byte, chunkSize int) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "test.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, int64(len(raw)), chunkSize, Meta{Created: time.Unix(1700000000, 0).UTC(), Source: "deploy test"})
	if err != nil {
		t.Fatal(err)
	}
	for i, off := 0, 0; off < len(raw); i, off = i+1, off+chunkSize {
		c := raw[off:min(off+chunkSize, len(raw))]
		kind, stored := KindZstd, enc.EncodeAll(c, nil)
		switch {
		case allZero(c):
			kind, stored = KindHole, nil
		case len(stored) >= len(c):
			kind, stored = KindRaw, c
		}
		if err := w.Add(i, kind, stored, sha256.Sum256(c)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// parseImage reads an image's index from its bytes.
func parseImage(t testing.TB, img []byte) *Index {
	t.Helper()
	ix, err := ReadIndex(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// Kinds of chunk makeRaw lays out, in this repeating order.
var rawPlan = []byte("tzrtdzztRp") // text, zero, random, text, dup of an earlier chunk, zero, zero, text, Random (dup of a random), partly zero

// makeRaw makes a raw disk of size bytes that exercises every path: text
// (compressible), random (stored raw), zero runs (holes, adjacent ones
// coalesced), duplicates of earlier text and random chunks (shared stored
// bytes), partly zero chunks, and a short last chunk when size is not a
// multiple of chunkSize.
func makeRaw(seed uint64, size int64, chunkSize int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	raw := make([]byte, size)
	words := []string{"boot ", "kernel ", "initrd ", "disk ", "mtftpd ", "chunk ", "zstd ", "\n", "sector ", "0123456789 "}
	var texts, randoms []int64
	for i, off := 0, int64(0); off < size; i, off = i+1, off+int64(chunkSize) {
		c := raw[off:min(off+int64(chunkSize), size)]
		switch rawPlan[i%len(rawPlan)] {
		case 't':
			for j := 0; j < len(c); {
				j += copy(c[j:], words[r.IntN(len(words))])
			}
			texts = append(texts, off)
		case 'r':
			for j := range c {
				c[j] = byte(r.Uint32())
			}
			randoms = append(randoms, off)
		case 'd', 'R':
			src := texts
			if rawPlan[i%len(rawPlan)] == 'R' {
				src = randoms
			}
			if s := src[r.IntN(len(src))]; s+int64(len(c)) <= size {
				copy(c, raw[s:])
			}
		case 'p':
			for j := len(c) / 2; j < len(c); j++ {
				c[j] = byte(r.Uint32()) | 1
			}
		}
	}
	return raw
}

// piecesOf cuts each range into pieces of random sizes (1 byte to three
// chunks) and shuffles them all.
func piecesOf(r *rand.Rand, ranges []Range, chunkSize int) []Range {
	var out []Range
	for _, rg := range ranges {
		for off, end := rg.Off, rg.Off+rg.Len; off < end; {
			k := min(end-off, 1+r.Int64N(int64(3*chunkSize)))
			out = append(out, Range{off, k})
			off += k
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
