package image

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
)

// The fuzzed image: small, with holes, shared and raw chunks, a short last
// chunk.
func fuzzImage(t testing.TB) ([]byte, []byte) {
	raw := makeRaw(11, 12*testChunk+777, testChunk)
	return raw, encodeImage(t, raw, testChunk)
}

// FuzzAssemblerDeliver delivers the image's own bytes at fuzzed ranges
// (overlapping, repeated, out of bounds, of any length), then every needed
// range once more. Whatever came first, the target must end up identical
// to the raw disk with nothing missing, and a range outside the file must
// be refused.
func FuzzAssemblerDeliver(f *testing.F) {
	f.Add([]byte{})
	f.Add(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(nil, 70000), 1<<20))
	f.Add(bytes.Repeat([]byte{0, 0, 0x50, 0, 0, 0, 0, 0, 0, 1, 0, 0}, 8))
	raw, img := fuzzImage(f)
	ix := parseImage(f, img)
	// On tmpfs: Close fsyncs, and an fsync per input on a disk makes the
	// fuzzer crawl.
	dir := f.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "mtftpd-fuzz-"); err == nil {
		dir = shm
		f.Cleanup(func() { os.RemoveAll(shm) })
	}
	var seq atomic.Int64
	f.Fuzz(func(t *testing.T, ops []byte) {
		path := filepath.Join(dir, strconv.FormatInt(seq.Add(1), 10))
		defer os.Remove(path)
		tg, err := OpenTarget(path, int64(len(raw)), TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		w := NewChunkWriter(ix, tg, 2)
		defer w.Close()
		asm := NewAssembler(ix, nil, w)
		size := ix.FileSize()
		for n := 0; len(ops) >= 12 && n < 64; n++ {
			off := int64(binary.BigEndian.Uint32(ops)) - 1000
			k := int64(binary.BigEndian.Uint64(ops[4:]) % uint64(2*size))
			ops = ops[12:]
			if off < 0 || off+k > size {
				if err := asm.Deliver(off, make([]byte, k)); err == nil {
					t.Fatalf("Deliver(%d, %d bytes) outside the %d-byte file accepted", off, k, size)
				}
				continue
			}
			if err := asm.Deliver(off, img[off:off+k]); err != nil {
				t.Fatalf("Deliver(%d, %d bytes) of the image's own bytes: %v", off, k, err)
			}
		}
		for _, r := range asm.Ranges() {
			if err := asm.Deliver(r.Off, img[r.Off:r.Off+r.Len]); err != nil {
				t.Fatal(err)
			}
		}
		if m := asm.Missing(); m != 0 {
			t.Fatalf("%d chunks missing after every range was delivered", m)
		}
		if err := w.ZeroHoles(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
			t.Fatal("target differs from the raw disk")
		}
	})
}

func TestAssemblerIntervals(t *testing.T) {
	p := &asmPartial{}
	for _, c := range []struct{ lo, hi, fresh int }{
		{10, 20, 10}, {10, 20, 0}, {0, 5, 5}, {5, 10, 5}, {15, 30, 10}, {40, 50, 10}, {0, 100, 60}, {3, 4, 0},
	} {
		if got := p.add(c.lo, c.hi); got != c.fresh {
			t.Errorf("add(%d, %d) = %d new bytes, want %d (intervals before: %v)", c.lo, c.hi, got, c.fresh, p.got)
		}
	}
	if len(p.got) != 1 || p.got[0] != (ivl{0, 100}) {
		t.Errorf("intervals %v, want [{0 100}]", p.got)
	}
}

func TestAssemblerRanges(t *testing.T) {
	_, img := fuzzImage(t)
	ix := parseImage(t, img)
	need := make([]bool, len(ix.Entries))
	for i := range need {
		need[i] = true
	}
	asm := NewAssembler(ix, need, nil)
	// Every data chunk needed: the ranges are exactly the data section,
	// each stored byte once.
	if r := asm.Ranges(); len(r) != 1 || r[0] != (Range{int64(ix.Header.DataOffset), int64(ix.Header.DataLen)}) {
		t.Errorf("Ranges() = %v, want the data section %d+%d", r, ix.Header.DataOffset, ix.Header.DataLen)
	}
	st := ix.Stats()
	if m := asm.Missing(); m != len(ix.Entries)-st.Holes {
		t.Errorf("Missing() = %d, want %d data chunks", m, len(ix.Entries)-st.Holes)
	}
	// Only a chunk whose stored bytes another chunk shares: one range, two chunks missing.
	users := map[uint64][]int{}
	for i, e := range ix.Entries {
		if e.Kind != KindHole {
			users[e.Offset] = append(users[e.Offset], i)
		}
	}
	for off, u := range users {
		if len(u) < 2 {
			continue
		}
		clear(need)
		for _, i := range u {
			need[i] = true
		}
		asm := NewAssembler(ix, need, nil)
		if r := asm.Ranges(); len(r) != 1 || r[0].Off != int64(off) || r[0].Len != int64(ix.Entries[u[0]].Len) {
			t.Errorf("chunks %v sharing %d: Ranges() = %v", u, off, r)
		}
		if m := asm.Missing(); m != len(u) {
			t.Errorf("chunks %v sharing %d: Missing() = %d", u, off, m)
		}
		break
	}
}
