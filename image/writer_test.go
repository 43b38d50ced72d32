package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// stream builds capture streams by hand, including broken ones.
type stream struct{ b []byte }

func newStream(chunkSize uint32, rawSize uint64) *stream {
	s := &stream{b: []byte(streamMagic)}
	s.b = binary.BigEndian.AppendUint16(s.b, Version)
	s.b = binary.BigEndian.AppendUint32(s.b, chunkSize)
	s.b = binary.BigEndian.AppendUint64(s.b, rawSize)
	s.b = binary.BigEndian.AppendUint32(s.b, 2)
	s.b = append(s.b, "{}"...)
	return s
}

func (s *stream) data(kind Kind, stored []byte, digest [32]byte) *stream {
	s.b = append(s.b, byte(kind))
	s.b = binary.BigEndian.AppendUint32(s.b, uint32(len(stored)))
	s.b = append(s.b, digest[:]...)
	s.b = append(s.b, stored...)
	return s
}

func (s *stream) hole() *stream { s.b = append(s.b, byte(KindHole)); return s }

func (s *stream) dup(ref uint32) *stream {
	s.b = binary.BigEndian.AppendUint32(append(s.b, streamDup), ref)
	return s
}

func (s *stream) end(d [32]byte) *stream {
	s.b = append(append(s.b, streamEnd), d[:]...)
	return s
}

func receive(t *testing.T, b []byte, maxSize int64) (*Index, error) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "recv.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return ReceiveStream(bytes.NewReader(b), f, maxSize)
}

func TestReceiveStreamHostile(t *testing.T) {
	cs := uint32(MinChunkSize)
	raw := bytes.Repeat([]byte("0123456789abcdef"), MinChunkSize/16)
	d := sha256.Sum256(raw)
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(raw, nil)
	zd := ZeroDigest(MinChunkSize)
	three := ImageDigest(func(i int) [32]byte { return [][32]byte{d, zd, d}[i] }, 3)
	// A frame that decodes to more than the chunk: two chunks' worth.
	big := enc.EncodeAll(append(bytes.Clone(raw), raw...), nil)
	// A frame that decodes to less.
	short := enc.EncodeAll(raw[:100], nil)

	good := newStream(cs, 3*uint64(cs)).data(KindZstd, z, d).hole().dup(0).end(three).b
	if ix, err := receive(t, good, 1<<20); err != nil || ix.Entries[2].Offset != ix.Entries[0].Offset {
		t.Fatalf("good stream: %v", err)
	}

	wrongDigest := d
	wrongDigest[0] ^= 1
	for _, tc := range []struct {
		name  string
		b     []byte
		max   int64
		is    error
		wants []string
	}{
		{"not a stream", []byte("MTFTPIMG and more bytes here"), 1 << 20, ErrNotImage, []string{"stream magic"}},
		{"empty", nil, 1 << 20, ErrTruncated, []string{"stream magic"}},
		{"bad version", append(append([]byte(streamMagic), 0, 2), newStream(cs, 10).b[10:]...), 1 << 20, ErrCorrupt, []string{"stream version 2"}},
		{"chunk size", newStream(1000, 10).b, 1 << 20, ErrCorrupt, []string{"chunk size 1000"}},
		{"too many chunks", newStream(cs, 1<<50).b, 1 << 40, ErrCorrupt, []string{"chunks (at most"}},
		{"index over the limit", newStream(cs, 1<<40).b, 1 << 20, ErrTooLarge, []string{"needs a 805310464-byte header and index", "limit is 1048576"}},
		{"data over the limit", newStream(cs, 3*uint64(cs)).data(KindZstd, z, d).data(KindRaw, raw, d).b, 8192 + int64(len(z)) + 100, ErrTooLarge, []string{"chunk 1 would make the image"}},
		{"length over the chunk size", newStream(cs, 3*uint64(cs)).data(KindZstd, make([]byte, cs+1), d).b, 1 << 30, ErrCorrupt, []string{"chunk 0: zstd chunk of 65537 stored bytes"}},
		{"zero length", newStream(cs, 3*uint64(cs)).data(KindZstd, nil, d).b, 1 << 30, ErrCorrupt, []string{"chunk 0: zstd chunk of 0"}},
		{"raw of the wrong length", newStream(cs, 3*uint64(cs)).data(KindRaw, raw[:10], d).b, 1 << 30, ErrCorrupt, []string{"raw chunk of 10"}},
		{"frame decodes to more", newStream(cs, 3*uint64(cs)).data(KindZstd, big, d).b, 1 << 30, ErrCorrupt, []string{"chunk 0 (raw offset 0"}},
		{"frame decodes to less", newStream(cs, 3*uint64(cs)).data(KindZstd, short, d).b, 1 << 30, ErrCorrupt, []string{"chunk 0 (raw offset 0", "decodes to 100 bytes"}},
		{"not a zstd frame", newStream(cs, 3*uint64(cs)).data(KindZstd, raw[:500], d).b, 1 << 30, ErrCorrupt, []string{"chunk 0", "zstd"}},
		{"wrong digest", newStream(cs, 3*uint64(cs)).data(KindZstd, z, wrongDigest).b, 1 << 30, ErrCorrupt, []string{"chunk 0 (raw offset 0): SHA-256 is"}},
		{"dup of a later chunk", newStream(cs, 3*uint64(cs)).dup(0).b, 1 << 30, ErrCorrupt, []string{"chunk 0 refers to chunk 0"}},
		{"dup of a hole", newStream(cs, 3*uint64(cs)).hole().dup(0).b, 1 << 30, ErrCorrupt, []string{"chunk 1 refers to chunk 0, a hole"}},
		{"dup of a longer chunk", newStream(cs, 2*uint64(cs)-5).data(KindZstd, z, d).dup(0).b, 1 << 30, ErrCorrupt, []string{"chunk 1 (65531 raw bytes) refers to chunk 0 (65536 raw bytes)"}},
		{"unknown kind", append(newStream(cs, 3*uint64(cs)).b, 7), 1 << 30, ErrCorrupt, []string{"chunk 0: unknown kind 7"}},
		{"early end", newStream(cs, 3*uint64(cs)).hole().end(three).b, 1 << 30, ErrCorrupt, []string{"stream ends after 1 of 3 chunks"}},
		{"truncated in a chunk", good[:100], 1 << 30, ErrTruncated, []string{"chunk 0's stored bytes"}},
		{"truncated before a chunk", newStream(cs, 3*uint64(cs)).hole().b, 1 << 30, ErrTruncated, []string{"before chunk 1 of 3"}},
		{"truncated in the digest", good[:len(good)-1], 1 << 30, ErrTruncated, []string{"image digest"}},
		{"wrong image digest", newStream(cs, 3*uint64(cs)).data(KindZstd, z, d).hole().dup(0).end(d).b, 1 << 30, ErrCorrupt, []string{"image digest in the stream"}},
		{"trailing data", append(bytes.Clone(good), 0), 1 << 30, ErrCorrupt, []string{"data after the stream end"}},
		{"no end marker", append(newStream(cs, 3*uint64(cs)).data(KindZstd, z, d).hole().dup(0).b, make([]byte, 33)...), 1 << 30, ErrCorrupt, []string{"after the last chunk"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := receive(t, tc.b, tc.max)
			checkErr(t, err, tc.is, tc.wants...)
		})
	}
}

// TestWriterRejects: the writer refuses calls that would make a bad image.
func TestWriterRejects(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "w.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := NewWriter(f, 0, MinChunkSize, Meta{}); err == nil {
		t.Error("raw size 0 accepted")
	}
	if _, err := NewWriter(f, 100, 1000, Meta{}); err == nil {
		t.Error("chunk size 1000 accepted")
	}
	if _, err := NewWriter(f, 100, MinChunkSize, Meta{Source: string(make([]byte, 4000))}); err == nil {
		t.Error("4000-byte metadata accepted")
	}
	w, err := NewWriter(f, 2*MinChunkSize, MinChunkSize, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	zd := ZeroDigest(MinChunkSize)
	for _, bad := range []func() error{
		func() error { return w.Add(1, KindHole, nil, zd) },                                  // out of order
		func() error { return w.Add(0, KindHole, []byte{1}, zd) },                            // hole with bytes
		func() error { return w.Add(0, KindHole, nil, [32]byte{1}) },                         // hole with a data digest
		func() error { return w.Add(0, KindZstd, nil, [32]byte{1}) },                         // no bytes, not a dup
		func() error { return w.Add(0, KindRaw, []byte{1}, [32]byte{1}) },                    // raw of the wrong length
		func() error { return w.Add(0, Kind(5), []byte{1}, [32]byte{1}) },                    // unknown kind
		func() error { return w.Add(0, KindZstd, make([]byte, MinChunkSize+1), [32]byte{}) }, // longer than a chunk
	} {
		if err := bad(); err == nil {
			t.Error("bad Add accepted")
		}
	}
	if _, err := w.Finish(); err == nil {
		t.Error("Finish with no chunks accepted")
	}
	if err := w.Add(0, KindHole, nil, zd); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(1, KindHole, nil, zd); err != nil {
		t.Fatal(err)
	}
	ix, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if ix.FileSize() != 8192 || ix.Stats().Holes != 2 {
		t.Fatalf("all-hole image: size %d, %+v", ix.FileSize(), ix.Stats())
	}
	if _, err := w.Finish(); err == nil {
		t.Error("second Finish accepted")
	}
	if fi, _ := f.Stat(); fi.Size() != 8192 {
		t.Errorf("file is %d bytes", fi.Size())
	}
	if _, err := Verify(context.Background(), f.Name(), 1, nil); err != nil {
		t.Fatal(err)
	}
	if errors.Is(nil, ErrCorrupt) {
		t.Fatal()
	}
}

// TestReceiveStreamWriteError: a chunk that cannot be written stops the
// receive at that chunk, naming it, even when the stream goes on (here it
// is cut short, which must not be what is reported).
func TestReceiveStreamWriteError(t *testing.T) {
	cs := uint32(MinChunkSize)
	const chunks = 24 // 1.5 MiB: more than the writer's 1 MiB buffer
	s := newStream(cs, uint64(chunks)*uint64(cs))
	raw := make([]byte, cs)
	for i := range chunks - 1 {
		binary.BigEndian.PutUint32(raw, uint32(i)) // no two chunks alike
		s.data(KindRaw, raw, sha256.Sum256(raw))
	}
	path := filepath.Join(t.TempDir(), "recv.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = ReceiveStream(bytes.NewReader(s.b), f, 1<<30)
	if err == nil || errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "writing chunk ") {
		t.Fatalf("got %v, want the write error of a chunk", err)
	}
}
