package image

import (
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// diskLike returns size bytes that look like a half-full system disk: the
// contents of files under /usr (binaries, libraries, text: what a real
// image compresses) for the first 60 %, zeros (holes) for the rest.
func diskLike(b *testing.B, size int64) []byte {
	b.Helper()
	raw := make([]byte, size)
	n := int64(0)
	full := size * 6 / 10
	filepath.WalkDir("/usr", func(p string, d fs.DirEntry, err error) error {
		if err != nil || n >= full {
			return fs.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		k, _ := io.ReadFull(f, raw[n:full])
		f.Close()
		n += int64(k)
		return nil
	})
	if n < full {
		b.Fatalf("only %d bytes of files under /usr, want %d", n, full)
	}
	return raw
}

// shmFile is a path in /dev/shm (tmpfs), removed at cleanup: the
// benchmarks measure the deploy, not a disk.
func shmFile(b *testing.B, name string) string {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "mtftpd-bench-")
	if err != nil {
		b.Skipf("no /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

// BenchmarkChunkWriter measures decode + SHA-256 check + write of every data
// chunk of a disk-like image to a file on tmpfs, on all cores; bytes are
// raw bytes written.
func BenchmarkChunkWriter(b *testing.B) {
	raw := diskLike(b, 256<<20)
	img := encodeImage(b, raw, DefaultChunkSize)
	ix := parseImage(b, img)
	tg, err := OpenTarget(shmFile(b, "disk"), int64(len(raw)), TargetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer tg.Close()
	asm := NewAssembler(ix, nil, nil)
	var dataBytes int64
	for _, e := range ix.Entries {
		if e.Kind != KindHole {
			dataBytes += int64(DefaultChunkSize)
		}
	}
	b.SetBytes(dataBytes)
	b.ReportAllocs()
	for b.Loop() {
		w := NewChunkWriter(ix, tg, 0)
		for _, g := range asm.groups {
			chunks := []int{int(g.first)}
			if g.more >= 0 {
				chunks = append(chunks, asm.shared[g.more]...)
			}
			buf := w.Buffer(int(g.n))
			copy(buf, img[g.off:])
			if err := w.PutShared(chunks, buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if p := w.Progress(); p.Bytes != dataBytes {
			b.Fatalf("wrote %d bytes, want %d", p.Bytes, dataBytes)
		}
	}
}

// BenchmarkDeployLoop compares one receiver's deploy of a disk-like image
// to a loop device on tmpfs (the image file read in 1 MiB pieces, as a
// receiver gets them, through Assembler, ChunkWriter and ZeroHoles, then
// fsync) with dd of the raw disk to the same device (conv=fsync): the
// limit of the device alone. Bytes are raw disk bytes.
func BenchmarkDeployLoop(b *testing.B) {
	needRoot(b)
	needTools(b, "dd", "losetup")
	const size = 512 << 20
	raw := diskLike(b, size)
	rawPath := shmFile(b, "disk.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	img := encodeImage(b, raw, DefaultChunkSize)
	ix := parseImage(b, img)
	raw = nil
	b.Logf("raw %d MiB, image %d MiB (%+v)", size>>20, len(img)>>20, ix.Stats())
	dev := losetup(b, makeShm(b, "loop.raw", size), 0)

	b.Run("image", func(b *testing.B) {
		b.SetBytes(size)
		defer cpuPerGiB(b, unix.RUSAGE_SELF, size)()
		for b.Loop() {
			tg, err := OpenTarget(dev, size, TargetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			w := NewChunkWriter(ix, tg, 0)
			if err := w.ZeroHoles(context.Background()); err != nil {
				b.Fatal(err)
			}
			asm := NewAssembler(ix, nil, w)
			for off := int64(0); off < int64(len(img)); off += 1 << 20 {
				if err := asm.Deliver(off, img[off:min(off+1<<20, int64(len(img)))]); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			tg.Close()
		}
	})
	b.Run("dd", func(b *testing.B) {
		b.SetBytes(size)
		defer cpuPerGiB(b, unix.RUSAGE_CHILDREN, size)()
		for b.Loop() {
			if out, err := exec.Command("dd", "if="+rawPath, "of="+dev, "bs=4M", "conv=fsync", "status=none").CombinedOutput(); err != nil {
				b.Fatalf("dd: %v\n%s", err, out)
			}
		}
	})
}

// cpuPerGiB reports the CPU time (user + system) of who (this process, or
// its finished children) per GiB deployed, when the returned function is
// called: on a machine shared with other work, the figure that does not
// depend on the load. The loop device's own kernel worker is in neither.
func cpuPerGiB(b *testing.B, who int, size int64) func() {
	cpu := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(who, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		b.ReportMetric((cpu()-start).Seconds()/float64(b.N)/(float64(size)/(1<<30)), "cpu-s/GiB")
	}
}

// makeShm is makeSparse on tmpfs.
func makeShm(b *testing.B, name string, size int64) string {
	p := shmFile(b, name)
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	return p
}
