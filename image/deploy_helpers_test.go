package image

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// encodeImage makes an image file of raw, as `image create` would: zero
// chunks are holes, identical chunks share stored bytes, a chunk zstd does
// not shrink is stored raw. It is the deploy tests' own encoder, written
// from the spec, independent of the package's Writer.
func encodeImage(t testing.TB, raw []byte, chunkSize int) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	rawSize := int64(len(raw))
	n := int((rawSize + int64(chunkSize) - 1) / int64(chunkSize))
	h := Header{Version: Version, ChunkSize: uint32(chunkSize), RawSize: uint64(rawSize), Chunks: uint32(n),
		IndexOffset: HeaderSize, IndexLen: uint64(n) * EntrySize,
		Meta: Meta{Created: time.Unix(1700000000, 0).UTC(), Source: "deploy test"}}
	h.DataOffset = (HeaderSize + h.IndexLen + 4095) &^ 4095
	var data, index []byte
	var digests [][32]byte
	seen := map[[32]byte]Entry{}
	for i := range n {
		off, rn := rawSpan(h.ChunkSize, h.RawSize, i)
		c := raw[off : off+int64(rn)]
		d := sha256.Sum256(c)
		e, dup := seen[d]
		switch {
		case dup:
		case allZero(c):
			e = Entry{Kind: KindHole, Digest: d}
		default:
			z := enc.EncodeAll(c, nil)
			e = Entry{Offset: h.DataOffset + uint64(len(data)), Kind: KindZstd, Digest: d}
			if len(z) >= len(c) {
				z, e.Kind = c, KindRaw
			}
			e.Len = uint32(len(z))
			data = append(data, z...)
			seen[d] = e
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
