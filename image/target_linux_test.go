package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const excl = unix.O_EXCL

func TestTargetFileGrowsAndIsCreated(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(small, 10<<20, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Size() != 10<<20 || tg.IsBlockDevice() {
		t.Errorf("Size %d block %v, want %d false", tg.Size(), tg.IsBlockDevice(), 10<<20)
	}
	tg.Close()
	if st, _ := os.Stat(small); st.Size() != 10<<20 {
		t.Errorf("file is %d bytes after OpenTarget, want %d", st.Size(), 10<<20)
	}
	if b, _ := os.ReadFile(small); string(b[:5]) != "hello" {
		t.Errorf("growing changed the file's first bytes: %q", b[:5])
	}

	// A larger file keeps its size; writes past it are refused.
	tg, err = OpenTarget(small, 1<<20, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Size() != 10<<20 {
		t.Errorf("Size %d, want %d (never shrunk)", tg.Size(), 10<<20)
	}
	if _, err := tg.WriteAt([]byte("x"), 10<<20); !errors.Is(err, ErrTargetTooSmall) {
		t.Errorf("write past the end: %v, want ErrTargetTooSmall", err)
	}
	tg.Close()

	missing := filepath.Join(dir, "new.raw")
	if _, err := OpenTarget(missing, 1<<20, TargetOptions{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only open of a missing file: %v, want ErrNotExist", err)
	}
	tg, err = OpenTarget(missing, 3<<20, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tg.Close()
	if st, err := os.Stat(missing); err != nil || st.Size() != 3<<20 {
		t.Errorf("missing file: %v, size %v, want created with %d bytes", err, st, 3<<20)
	}
	if _, err := OpenTarget(dir, 1<<20, TargetOptions{}); !errors.Is(err, ErrNotTarget) {
		t.Errorf("a directory: %v, want ErrNotTarget", err)
	}
	if _, err := OpenTarget("/dev/null", 1<<20, TargetOptions{}); !errors.Is(err, ErrNotTarget) {
		t.Errorf("a character device: %v, want ErrNotTarget", err)
	}
}

func TestTargetFileZeroRange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	want := bytes.Repeat([]byte{0xa5}, 4<<20)
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(p, int64(len(want)), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := tg.ZeroRange(1000, 1<<20+333); err != nil {
		t.Fatal(err)
	}
	clear(want[1000 : 1000+1<<20+333])
	got := make([]byte, len(want))
	if _, err := tg.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("ZeroRange on a file: contents differ from the expected zeroed range")
	}
}

// fillPattern writes a non-zero pattern of n bytes into dev (through the
// file system, not OpenTarget).
func fillPattern(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 1)
		if b[i] == 0 {
			b[i] = 1
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return b
}

func readAll(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTargetLoopTooSmall(t *testing.T) {
	needRoot(t)
	file := makeSparse(t, "small.raw", 8<<20)
	dev := losetup(t, file, 0)
	before := fillPattern(t, dev, 8<<20)
	_, err := OpenTarget(dev, 16<<20, TargetOptions{})
	if !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("OpenTarget of an 8 MiB device for a 16 MiB image: %v, want ErrTargetTooSmall", err)
	}
	if msg := err.Error(); !strings.Contains(msg, dev) || !strings.Contains(msg, "is 8 MiB, the image needs 16 MiB") {
		t.Errorf("error %q does not name the device and both sizes", msg)
	}
	if !bytes.Equal(readAll(t, dev, 8<<20), before) {
		t.Error("the refused device was written")
	}
	tg, err := OpenTarget(dev, 8<<20, TargetOptions{})
	if err != nil {
		t.Fatalf("an 8 MiB image on the 8 MiB device: %v", err)
	}
	if !tg.IsBlockDevice() || tg.Size() != 8<<20 {
		t.Errorf("block %v size %d, want true %d", tg.IsBlockDevice(), tg.Size(), 8<<20)
	}
	tg.Close()
}

func TestTargetLoopMounted(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4")
	file := makeSparse(t, "fs.raw", 32<<20)
	dev := losetup(t, file, 0)
	run(t, "mkfs.ext4", "-q", dev)
	dir := mount(t, dev)
	_, err := OpenTarget(dev, 1<<20, TargetOptions{})
	if !errors.Is(err, ErrTargetInUse) {
		t.Fatalf("OpenTarget of a mounted device: %v, want ErrTargetInUse", err)
	}
	if msg := err.Error(); !strings.Contains(msg, dev+" is mounted on "+dir) {
		t.Errorf("error %q does not say %s is mounted on %s", msg, dev, dir)
	}
	// Read-only (verify) opens are allowed.
	tg, err := OpenTarget(dev, 1<<20, TargetOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a mounted device: %v", err)
	}
	if _, err := tg.WriteAt([]byte{1}, 0); err == nil {
		t.Error("WriteAt on a read-only target succeeded")
	}
	tg.Close()
}

func TestTargetLoopPartitionMounted(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4")
	file := makeSparse(t, "disk.raw", 40<<20)
	partitionFile(t, file, "gpt")
	dev := losetup(t, file, 1)
	part := dev + "p1"
	run(t, "mkfs.ext4", "-q", part)
	before := readAll(t, dev, 40<<20)
	dir := mount(t, part)
	for _, p := range []string{dev, part} {
		_, err := OpenTarget(p, 1<<20, TargetOptions{})
		if !errors.Is(err, ErrTargetInUse) {
			t.Fatalf("OpenTarget(%s) with %s mounted: %v, want ErrTargetInUse", p, part, err)
		}
		if msg := err.Error(); !strings.Contains(msg, part+" is mounted on "+dir) {
			t.Errorf("error %q does not say %s is mounted on %s", msg, part, dir)
		}
	}
	// Only the mount can have changed the disk (ext4 writes its
	// superblock's mount time): compare outside the partition.
	after := readAll(t, dev, 40<<20)
	if !bytes.Equal(after[:1<<20], before[:1<<20]) || !bytes.Equal(after[len(after)-1<<20:], before[len(before)-1<<20:]) {
		t.Error("the partition table area changed: the refused disk was written")
	}
}

func TestTargetLoopExclusive(t *testing.T) {
	needRoot(t)
	file := makeSparse(t, "excl.raw", 4<<20)
	dev := losetup(t, file, 0)
	// Another program holding the device O_EXCL: only the kernel knows.
	other, err := os.OpenFile(dev, os.O_RDWR|excl, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenTarget(dev, 1<<20, TargetOptions{})
	other.Close()
	if !errors.Is(err, ErrTargetInUse) || !strings.Contains(err.Error(), "exclusive open") {
		t.Fatalf("OpenTarget of a device opened O_EXCL elsewhere: %v, want ErrTargetInUse (exclusive open)", err)
	}
	tg, err := OpenTarget(dev, 1<<20, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	// ...and while the Target is open, nobody mounts it.
	if _, err := os.OpenFile(dev, os.O_RDWR|excl, 0); err == nil {
		t.Error("a second exclusive open succeeded while the Target holds the device")
	}
}

func TestTargetRootRefused(t *testing.T) {
	needRoot(t)
	mounts, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	var root string
	for _, m := range mounts {
		if m.point == "/" && strings.HasPrefix(m.source, "/dev/") {
			root = m.source
		}
	}
	if root == "" {
		t.Skip("/ is not on a /dev block device here (container overlay?)")
	}
	if st, err := os.Stat(root); err != nil || st.Mode()&os.ModeDevice == 0 {
		t.Skipf("root source %s is not a device node here: %v", root, err)
	}
	// OpenTarget never writes, so pointing it at the real root disk is safe.
	tg, err := OpenTarget(root, 1<<20, TargetOptions{})
	if err == nil {
		tg.Close()
		t.Fatalf("OpenTarget(%s) of the running root succeeded", root)
	}
	if !errors.Is(err, ErrTargetRoot) || !strings.Contains(err.Error(), "root file system") {
		t.Fatalf("OpenTarget(%s): %v, want ErrTargetRoot", root, err)
	}
}

func TestTargetLoopZeroRange(t *testing.T) {
	needRoot(t)
	const size = 8 << 20
	file := makeSparse(t, "zero.raw", size)
	dev := losetup(t, file, 0)
	want := fillPattern(t, dev, size)
	tg, err := OpenTarget(dev, size, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Unaligned at both ends: BLKZEROOUT for the 512-byte-aligned middle,
	// plain writes for the head and tail.
	for _, r := range [][2]int64{{1000, 3<<20 + 333}, {5 << 20, 1 << 20}, {size - 100, 100}} {
		if err := tg.ZeroRange(r[0], r[1]); err != nil {
			t.Fatalf("ZeroRange(%d, %d): %v", r[0], r[1], err)
		}
		clear(want[r[0] : r[0]+r[1]])
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	if !bytes.Equal(readAll(t, dev, size), want) {
		t.Error("device contents after ZeroRange differ from the pattern with the ranges zeroed")
	}
	if !bytes.Equal(readAll(t, file, size), want) {
		t.Error("backing file contents after ZeroRange differ from the pattern with the ranges zeroed")
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{
		512 << 20: "512 MiB", 1 << 30: "1 GiB", 1000: "1000 bytes", 3 << 9: "1.5 KiB (1536 bytes)",
		1536 << 20: "1.5 GiB (1610612736 bytes)", 5: "5 bytes",
	} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/mnt/a\040b`: "/mnt/a b", `/x\134y`: `/x\y`, `/end\04`: `/end\04`, "/plain": "/plain"} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
