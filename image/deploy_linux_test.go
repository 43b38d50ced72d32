package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testChunk = MinChunkSize // 64 KiB: many chunks from a few MiB

// garbage fills the target with 0xEE so that every byte the deploy leaves
// alone shows.
func garbage(t testing.TB, tg *Target, n int64) {
	t.Helper()
	b := bytes.Repeat([]byte{0xee}, 1<<20)
	for off := int64(0); off < n; off += int64(len(b)) {
		if _, err := tg.WriteAt(b[:min(int64(len(b)), n-off)], off); err != nil {
			t.Fatal(err)
		}
	}
}

func readTarget(t testing.TB, tg *Target, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := tg.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// deployPieces writes img to tg through ZeroHoles, an Assembler fed the
// bytes of ranges in random pieces and random order, and Close.
func deployPieces(t testing.TB, tg *Target, img []byte, ix *Index, need []bool, ranges func(*Assembler) []Range, seed uint64) (*ChunkWriter, error) {
	t.Helper()
	w := NewChunkWriter(ix, tg, 3)
	if err := w.ZeroHoles(context.Background()); err != nil {
		w.Close()
		return w, err
	}
	asm := NewAssembler(ix, need, w)
	r := rand.New(rand.NewPCG(seed, 2))
	for _, p := range piecesOf(r, ranges(asm), int(ix.Header.ChunkSize)) {
		if err := asm.Deliver(p.Off, img[p.Off:p.Off+p.Len]); err != nil {
			w.Close()
			return w, err
		}
	}
	if err := w.Close(); err != nil {
		return w, err
	}
	if m := asm.Missing(); m != 0 {
		t.Errorf("Missing() = %d after every range was delivered", m)
	}
	return w, nil
}

func wholeFile(ix *Index) func(*Assembler) []Range {
	return func(*Assembler) []Range { return []Range{{0, ix.FileSize()}} }
}

func neededRanges(a *Assembler) []Range { return a.Ranges() }

// checkImage sanity-checks what encodeImage made of makeRaw's disk: the
// test is only as good as the paths it takes.
func checkImage(t testing.TB, ix *Index) {
	t.Helper()
	st := ix.Stats()
	if st.Holes == 0 || st.Dups == 0 || st.Raw == 0 || st.Raw == len(ix.Entries)-st.Holes {
		t.Fatalf("image lacks a kind of chunk: %+v of %d chunks", st, len(ix.Entries))
	}
}

func TestDeployFile(t *testing.T) {
	raw := makeRaw(1, 97*testChunk+1000, testChunk) // short last chunk, not sector aligned
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	checkImage(t, ix)
	for name, ranges := range map[string]func(*Assembler) []Range{"whole file": wholeFile(ix), "needed ranges": neededRanges} {
		t.Run(name, func(t *testing.T) {
			tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			garbage(t, tg, tg.Size())
			w, err := deployPieces(t, tg, img, ix, nil, ranges, 7)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
				t.Fatal("deployed file differs from the raw disk")
			}
			st := ix.Stats()
			p := w.Progress()
			if p.Chunks != int64(len(ix.Entries)-st.Holes) || p.Holes != int64(st.Holes) || p.Bytes+p.HoleBytes != int64(len(raw)) {
				t.Errorf("Progress %+v, want %d chunks, %d holes, %d bytes in all", p, len(ix.Entries)-st.Holes, st.Holes, len(raw))
			}
			if err := VerifyTarget(context.Background(), tg, ix, 2); err != nil {
				t.Errorf("VerifyTarget after deploy: %v", err)
			}
		})
	}
}

func TestDeployLoop(t *testing.T) {
	needRoot(t)
	raw := makeRaw(2, 130*testChunk+3*512, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	checkImage(t, ix)
	dev := losetup(t, makeSparse(t, "loop.raw", int64(len(raw))+5*testChunk), 0)
	tg, err := OpenTarget(dev, int64(len(raw)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	garbage(t, tg, tg.Size())
	if _, err := deployPieces(t, tg, img, ix, nil, neededRanges, 8); err != nil {
		t.Fatal(err)
	}
	got := readTarget(t, tg, tg.Size())
	if !bytes.Equal(got[:len(raw)], raw) {
		t.Fatal("deployed loop device differs from the raw disk")
	}
	if !bytes.Equal(got[len(raw):], bytes.Repeat([]byte{0xee}, len(got)-len(raw))) {
		t.Error("the deploy wrote past the image's raw size")
	}
	if err := VerifyTarget(context.Background(), tg, ix, 2); err != nil {
		t.Errorf("VerifyTarget after deploy: %v", err)
	}
}

// corruptChunk returns a copy of img with one byte of chunk i's stored
// bytes flipped.
func corruptChunk(img []byte, ix *Index, i int) []byte {
	bad := bytes.Clone(img)
	e := ix.Entries[i]
	bad[e.Offset+uint64(e.Len)/2] ^= 0x40
	return bad
}

func TestDeployCorruptChunkNeverWritten(t *testing.T) {
	raw := makeRaw(3, 40*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	users := map[uint64][]int{} // stored offset -> chunks
	for i, e := range ix.Entries {
		if e.Kind != KindHole {
			users[e.Offset] = append(users[e.Offset], i)
		}
	}
	// any: either shared or not.
	pick := func(kind Kind, shared, any bool) int {
		for i, e := range ix.Entries {
			if e.Kind == kind && (any || (len(users[e.Offset]) > 1) == shared) {
				return i
			}
		}
		t.Fatalf("no %v chunk (shared %v) in the test image", kind, shared)
		return -1
	}
	for _, c := range []struct {
		name   string
		chunk  int
		digest bool // a *ChunkError (else a zstd error naming the chunk)
	}{
		{"raw chunk", pick(KindRaw, false, true), true},
		{"zstd chunk", pick(KindZstd, false, false), false},
		{"shared chunk", pick(KindZstd, true, false), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := corruptChunk(img, ix, c.chunk)
			tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			garbage(t, tg, tg.Size())
			_, err = deployPieces(t, tg, bad, ix, nil, neededRanges, 9)
			if err == nil {
				t.Fatal("deploy of an image with a flipped byte succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("chunk %d ", c.chunk)) {
				t.Fatalf("error %q: want ErrCorrupt naming chunk %d", err, c.chunk)
			}
			var ce *ChunkError
			if c.digest && (!errors.As(err, &ce) || ce.Chunk != c.chunk || ce.Want != ix.Entries[c.chunk].Digest) {
				t.Fatalf("error %v: want a *ChunkError for chunk %d with the index digest", err, c.chunk)
			}
			got := readTarget(t, tg, int64(len(raw)))
			for _, i := range users[ix.Entries[c.chunk].Offset] {
				off, n := ix.RawSpan(i)
				if !bytes.Equal(got[off:off+int64(n)], bytes.Repeat([]byte{0xee}, n)) {
					t.Errorf("chunk %d's raw range was written although its stored bytes are corrupt", i)
				}
			}
		})
	}
}

func TestScanResumeAndDelta(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(4, 61*testChunk+4096, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()

	// A deploy cut half way: only the even chunks arrived.
	half := make([]bool, len(ix.Entries))
	for i := range half {
		half[i] = i%2 == 0
	}
	garbage(t, tg, tg.Size())
	if _, err := deployPieces(t, tg, img, ix, half, neededRanges, 10); err != nil {
		t.Fatal(err)
	}
	var last int64
	need, err := Scan(ctx, tg, ix, 3, func(n int64) {
		if n <= last {
			t.Errorf("progress went from %d to %d", last, n)
		}
		last = n
	})
	if err != nil {
		t.Fatal(err)
	}
	var dataBytes int64
	for i, e := range ix.Entries {
		want := e.Kind != KindHole && i%2 == 1
		if need[i] != want {
			t.Errorf("after a half deploy, need[%d] = %v, want %v (kind %v)", i, need[i], want, e.Kind)
		}
		if e.Kind != KindHole {
			_, n := ix.RawSpan(i)
			dataBytes += int64(n)
		}
	}
	if last != dataBytes {
		t.Errorf("progress ended at %d, want the data chunks' %d bytes", last, dataBytes)
	}
	if err := VerifyTarget(ctx, tg, ix, 2); err == nil {
		t.Error("VerifyTarget of a half-deployed target succeeded")
	}
	// Resume: fetch only what Scan says.
	if _, err := deployPieces(t, tg, img, ix, need, neededRanges, 11); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
		t.Fatal("resumed deploy differs from the raw disk")
	}

	// Delta: version 2 changes three chunks (one becomes a hole); the disk
	// holds version 1.
	raw2 := bytes.Clone(raw)
	changed := map[int]bool{5: true, 17: true, 40: true}
	for i := range changed {
		off, n := ix.RawSpan(i)
		for j := range n {
			raw2[off+int64(j)] ^= 0x5a
		}
	}
	off, n := ix.RawSpan(30)
	clear(raw2[off : off+int64(n)])
	img2 := encodeImage(t, raw2, testChunk)
	ix2 := parseImage(t, img2)
	need2, err := Scan(ctx, tg, ix2, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range need2 {
		if want := changed[i]; need2[i] != want {
			t.Errorf("delta: need[%d] = %v, want %v", i, need2[i], want)
		}
	}
	if _, err := deployPieces(t, tg, img2, ix2, need2, neededRanges, 12); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readTarget(t, tg, int64(len(raw2))), raw2) {
		t.Fatal("delta deploy differs from version 2")
	}
	if err := VerifyTarget(ctx, tg, ix2, 2); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyTargetNamesFirstBadChunk(t *testing.T) {
	ctx := context.Background()
	raw := makeRaw(5, 50*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	path := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(path, int64(len(raw)), TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := VerifyTarget(ctx, tg, ix, 3); err != nil {
		t.Fatalf("VerifyTarget of the raw disk itself: %v", err)
	}
	hole := -1
	for i, e := range ix.Entries {
		if e.Kind == KindHole && i > 10 {
			hole = i
			break
		}
	}
	for _, bad := range [][]int{{33}, {44, 12, 30}, {hole}, {hole, 49}} {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		flip := func() {
			for _, i := range bad {
				off, n := ix.RawSpan(i)
				b := []byte{0}
				f.ReadAt(b, off+int64(n)/3)
				b[0] ^= 1
				f.WriteAt(b, off+int64(n)/3)
			}
		}
		flip()
		err = VerifyTarget(ctx, tg, ix, 3)
		flip()
		f.Close()
		var ce *ChunkError
		if !errors.As(err, &ce) || ce.Chunk != min(bad[0], bad[len(bad)-1], bad[len(bad)/2]) {
			t.Errorf("flipped a byte in chunks %v: VerifyTarget says %v, want a *ChunkError for chunk %d", bad, err, min(bad[0], bad[len(bad)-1], bad[len(bad)/2]))
		} else if !strings.Contains(err.Error(), tg.Path()) {
			t.Errorf("error %q does not name the target", err)
		}
	}
}
