package image

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestForgedChunkFetchedAgain (review of issue 12): over multicast anyone
// can forge a shard, so a chunk that fails its digest there is not
// written, does not stop the writer, and is fetched again by unicast;
// the disk ends right.
func TestForgedChunkFetchedAgain(t *testing.T) {
	raw := makeRaw(3, 40*testChunk, testChunk)
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	w := NewChunkWriter(ix, tg, 2)
	var mu sync.Mutex
	var bad []int
	w.Tolerate(func(chunks []int, err error) { mu.Lock(); bad = append(bad, chunks...); mu.Unlock() })
	asm := NewAssembler(ix, nil, w)
	forged := bytes.Clone(img)
	victim := -1
	for i, e := range ix.Entries {
		if e.Kind != KindHole {
			victim = i
			forged[e.Offset+uint64(e.Len)/2] ^= 0x10
			break
		}
	}
	for _, r := range asm.Ranges() {
		if err := asm.Deliver(r.Off, forged[r.Off:r.Off+r.Len]); err != nil {
			t.Fatal(err)
		}
	}
	w.Wait()
	w.Tolerate(nil)
	if w.Err() != nil || len(bad) == 0 || bad[0] != victim {
		t.Fatalf("writer error %v, bad chunks %v: want chunk %d reported and the writer alive", w.Err(), bad, victim)
	}
	off, n := ix.RawSpan(victim)
	if bytes.Equal(readTarget(t, tg, int64(len(raw)))[off:off+int64(n)], raw[off:off+int64(n)]) {
		t.Fatal("the forged chunk was written")
	}
	need := asm.remaining()
	for _, c := range bad {
		need[c] = true
	}
	hs := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(rw, r, "x.img", time.Unix(0, 0), bytes.NewReader(img))
	}))
	defer hs.Close()
	if err := FetchHTTP(context.Background(), httpClient(), hs.URL, ix, need, w, 2); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readTarget(t, tg, int64(len(raw))), raw) {
		t.Fatal("the disk differs after the unicast pass")
	}
}

// TestAssemblerPartialCap (review of issue 12): a sender that starts
// every chunk (one stripe of each) cannot make the assembler hold a
// chunk buffer for each: beyond the cap, chunks are left missing.
func TestAssemblerPartialCap(t *testing.T) {
	raw := makeRaw(4, 300*testChunk, testChunk)
	for i := range raw {
		raw[i] = byte(i*131) ^ byte(i>>9) // no holes, no dups: 300 stored chunks
	}
	img := encodeImage(t, raw, testChunk)
	ix := parseImage(t, img)
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "disk"), int64(len(raw)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	w := NewChunkWriter(ix, tg, 2)
	defer w.Close()
	asm := NewAssembler(ix, nil, w)
	asm.LimitPartial(8)
	for _, e := range ix.Entries {
		if err := asm.Deliver(int64(e.Offset), img[e.Offset:e.Offset+16]); err != nil {
			t.Fatal(err)
		}
	}
	asm.mu.Lock()
	held := len(asm.partial)
	asm.mu.Unlock()
	if held > 8 {
		t.Fatalf("%d chunks held partly assembled, cap 8", held)
	}
	left := 0
	for _, n := range asm.remaining() {
		if n {
			left++
		}
	}
	if left != len(ix.Entries) {
		t.Fatalf("%d chunks left to fetch, want all %d", left, len(ix.Entries))
	}
}
