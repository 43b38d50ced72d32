package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

const mib = 1 << 20

// sparseDisk writes a sparse raw disk: an MBR signature, random data,
// compressible text, a duplicate of a random chunk, an explicitly written
// all-zero chunk (allocated, but must become a hole), a small write inside
// an otherwise unallocated chunk, and a short last chunk. It returns the
// path and the file size.
func sparseDisk(t testing.TB, dir string) (string, int64) {
	t.Helper()
	path := filepath.Join(dir, "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 24*mib + 777
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, mib)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 2*mib/44+1)[:2*mib]
	writes := []struct {
		off int64
		b   []byte
	}{
		{510, []byte{0x55, 0xAA}},
		{2 * mib, random},
		{3 * mib, text},
		{7 * mib, random}, // same bytes as chunk 2: stored once
		{10 * mib, make([]byte, mib)},
		{12*mib + 5000, []byte("a few bytes in a sparse chunk")},
		{24 * mib, bytes.Repeat([]byte{7}, 777)},
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return path, size
}

// countingSource counts the bytes a Source is asked to read.
type countingSource struct {
	Source
	read atomic.Int64
}

func (c *countingSource) ReadAt(p []byte, off int64) (int, error) {
	c.read.Add(int64(len(p)))
	return c.Source.ReadAt(p, off)
}

// decodeAll decodes every chunk of the image file and returns the raw disk.
func decodeAll(t testing.TB, path string) ([]byte, *Index) {
	t.Helper()
	f, ix, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []byte
	for i, e := range ix.Entries {
		stored := make([]byte, e.Len)
		if _, err := f.ReadAt(stored, int64(e.Offset)); err != nil && e.Len > 0 {
			t.Fatal(err)
		}
		raw, err := d.Decode(ix, i, stored, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw...)
	}
	return out, ix
}

// rawImageDigest recomputes the image digest from raw disk bytes.
func rawImageDigest(raw []byte, chunkSize int) [32]byte {
	n := (len(raw) + chunkSize - 1) / chunkSize
	return ImageDigest(func(i int) [32]byte {
		return sha256.Sum256(raw[i*chunkSize : min(len(raw), (i+1)*chunkSize)])
	}, n)
}

func TestCreateSparseRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path, size := sparseDisk(t, dir)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, ok := src.(*rawSource); !ok {
		t.Fatalf("OpenSource gave a %T for a raw file", src)
	}
	ext, err := src.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var allocated int64
	for _, e := range ext {
		allocated += e.Len
	}
	t.Logf("%d extents, %d of %d bytes allocated", len(ext), allocated, size)
	cs := &countingSource{Source: src}
	meta, err := SourceMeta(cs, path, "test")
	if err != nil {
		t.Fatal(err)
	}
	if meta.PartitionTable != "dos" || meta.Tool != "mtftpd test" || meta.Source != path {
		t.Fatalf("meta %+v", meta)
	}
	cs.read.Store(0)
	var progress []int64
	img := filepath.Join(dir, "disk.img")
	ix, err := WriteFile(context.Background(), cs, img, meta, CreateOptions{
		Workers:  3,
		Progress: func(n int64) { progress = append(progress, n) },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Unallocated ranges are never read (the filesystem of the test's temp
	// dir must support SEEK_DATA, as ext4, xfs, btrfs and tmpfs do).
	if r := cs.read.Load(); r > allocated || r >= size/2 {
		t.Errorf("read %d bytes of a %d-byte file with %d allocated", r, size, allocated)
	}
	if len(progress) != 25 || progress[24] != size {
		t.Errorf("progress calls %d, last %v", len(progress), progress[len(progress)-1:])
	}
	got, ix2 := decodeAll(t, img)
	if !bytes.Equal(got, want) {
		t.Fatal("decoded image differs from the raw disk")
	}
	if ix2.Header.ImageDigest != ix.Header.ImageDigest || ix.Header.ImageDigest != rawImageDigest(want, DefaultChunkSize) {
		t.Fatal("image digest differs from the one recomputed from the raw disk")
	}
	kinds := map[int]Kind{0: KindZstd, 1: KindHole, 2: KindRaw, 3: KindZstd, 7: KindRaw, 10: KindHole, 12: KindZstd, 24: KindZstd}
	for i, k := range kinds {
		if ix.Entries[i].Kind != k {
			t.Errorf("chunk %d is %v, want %v", i, ix.Entries[i].Kind, k)
		}
	}
	if ix.Entries[7].Offset != ix.Entries[2].Offset {
		t.Error("chunk 7 (a copy of chunk 2) is stored twice")
	}
	st := ix.Stats()
	if st.Dups != 1 || st.Holes != 25-7 || st.Raw != 2 {
		t.Errorf("stats %+v", st)
	}
	if ix.Header.Meta.PartitionTable != "dos" {
		t.Errorf("partition table %q", ix.Header.Meta.PartitionTable)
	}
	if fi, err := os.Stat(img); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("image file mode: %v %v", fi.Mode(), err)
	}
	if m, _ := filepath.Glob(img + ".tmp-*"); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}

	// The capture stream of the same disk, received, is the same file.
	var stream bytes.Buffer
	sw, err := NewStreamWriter(&stream, size, DefaultChunkSize, meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := Create(context.Background(), src, sw, CreateOptions{Workers: 2}); err != nil {
		t.Fatal(err)
	}
	six, err := sw.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if six.Header != ix.Header {
		t.Fatalf("stream writer's header %+v, file writer's %+v", six.Header, ix.Header)
	}
	recv, err := os.Create(filepath.Join(dir, "received.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	rix, err := ReceiveStream(bytes.NewReader(stream.Bytes()), recv, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if rix.Header != ix.Header {
		t.Fatal("received header differs")
	}
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(recv.Name())
	if !bytes.Equal(a, b) {
		t.Fatal("received image file differs from the created one")
	}
}

func TestCreateCancelRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	path, _ := sparseDisk(t, dir)
	src, err := OpenSource(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	img := filepath.Join(dir, "x.img")
	_, err = WriteFile(ctx, src, img, Meta{}, CreateOptions{
		ChunkSize: MinChunkSize,
		Progress: func(n int64) {
			if n > 3*mib {
				cancel()
			}
		},
	})
	if err != context.Canceled {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "x.img*")); len(m) != 0 {
		t.Fatalf("files left after cancel: %v", m)
	}
}

// needTool fails the test when running as root without a tool (the test
// machine must have it: scripts/test-deps.sh installs it), and skips it
// otherwise.
func needTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		testutil.Tool(t, n)
	}
}

func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func TestCreateQcow2(t *testing.T) {
	needTool(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	q := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "20M")
	run(t, "qemu-io", "-f", "qcow2",
		"-c", "write -P 0xab 1M 2M",
		"-c", "write -P 0x00 5M 1M", // allocated zeros: a hole in the image
		"-c", "write -P 0x11 9M 64k",
		"-c", "write -z 12M 1M", // a zero cluster: qemu-img map says zero
		"-c", "write -P 0x55 19M 1M",
		q)
	rawPath := filepath.Join(dir, "disk.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, rawPath)
	want, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	qs, ok := src.(*qemuSource)
	if !ok {
		t.Fatalf("OpenSource gave a %T for a qcow2 file", src)
	}
	if src.Size() != 20*mib {
		t.Fatalf("size %d", src.Size())
	}
	var allocated int64
	for _, e := range qs.extents {
		allocated += e.Len
	}
	if allocated > 5*mib {
		t.Errorf("qemu-img map extents cover %d bytes: %+v", allocated, qs.extents)
	}
	cs := &countingSource{Source: src}
	img := filepath.Join(dir, "disk.img")
	meta, err := SourceMeta(cs, q, "test")
	if err != nil {
		t.Fatal(err)
	}
	ix, err := WriteFile(context.Background(), cs, img, meta, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if qs.cmd.ProcessState == nil {
		t.Fatal("qemu-nbd still running after Close")
	}
	if _, err := os.Stat(qs.dir); !os.IsNotExist(err) {
		t.Errorf("socket dir left: %v", err)
	}
	got, _ := decodeAll(t, img)
	if !bytes.Equal(got, want) {
		t.Fatal("image of the qcow2 differs from qemu-img convert -O raw")
	}
	if ix.Header.ImageDigest != rawImageDigest(want, DefaultChunkSize) {
		t.Fatal("image digest differs from the raw disk's")
	}
	if st := ix.Stats(); st.Holes != 20-4 {
		t.Errorf("stats %+v, want 16 holes", st)
	}
	if r := cs.read.Load(); r > allocated+1024 {
		t.Errorf("read %d bytes through NBD, %d allocated", r, allocated)
	}
}

func TestSourceErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := OpenSource(ctx, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	if _, err := OpenSource(ctx, empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := OpenSource(ctx, dir); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("directory: %v", err)
	}
	// A qcow2 without qemu-img on the PATH is refused by name, not
	// imaged as raw bytes.
	needTool(t, "qemu-img")
	q := filepath.Join(dir, "d.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "1M")
	old := qemuImg
	qemuImg = "qemu-img-not-installed"
	defer func() { qemuImg = old }()
	if _, err := OpenSource(ctx, q); err == nil || !strings.Contains(err.Error(), "qcow2") || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("qcow2 without qemu-img: %v", err)
	}
	qemuImg = old
	oldNBD := qemuNBD
	qemuNBD = "false"
	defer func() { qemuNBD = oldNBD }()
	start := time.Now()
	if _, err := OpenSource(ctx, q); err == nil || !strings.Contains(err.Error(), "qemu-nbd") {
		t.Errorf("qemu-nbd failing: %v", err)
	}
	_ = start
}

func TestPartitionTable(t *testing.T) {
	b := make([]byte, 1024)
	if PartitionTable(b) != "" {
		t.Error("zeros")
	}
	b[510], b[511] = 0x55, 0xAA
	if PartitionTable(b) != "dos" {
		t.Error("mbr")
	}
	copy(b[512:], "EFI PART")
	if PartitionTable(b) != "gpt" {
		t.Error("gpt")
	}
	if PartitionTable(b[:100]) != "" {
		t.Error("short")
	}
}

func BenchmarkCreate(b *testing.B) {
	// 32 MiB of mixed data: text, random bytes and zeros.
	rng := rand.New(rand.NewPCG(3, 4))
	raw := make([]byte, 32*mib)
	for i := 0; i < len(raw); i += 4 * mib {
		switch (i / (4 * mib)) % 3 {
		case 0:
			copy(raw[i:i+4*mib], bytes.Repeat([]byte("mtftpd image benchmark text, fairly compressible 0123456789\n"), 4*mib/60+1))
		case 1:
			for j := i; j < i+4*mib; j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					raw[j+k] = byte(v >> (8 * k))
				}
			}
		}
	}
	src := &memSource{b: raw}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var n countWriter
		sw, err := NewStreamWriter(&n, int64(len(raw)), DefaultChunkSize, Meta{})
		if err != nil {
			b.Fatal(err)
		}
		if err := Create(context.Background(), src, sw, CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := sw.Finish(); err != nil {
			b.Fatal(err)
		}
		if n == 0 || n > countWriter(len(raw)) {
			b.Fatalf("stream of %d bytes for %d raw", n, len(raw))
		}
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// memSource is a Source over a byte slice with no holes.
type memSource struct{ b []byte }

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memSource) Size() int64 { return int64(len(m.b)) }
func (m *memSource) Extents(context.Context) ([]Extent, error) {
	return wholeExtent(int64(len(m.b))), nil
}
func (m *memSource) Close() error { return nil }
