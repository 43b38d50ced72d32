package image

import (
	"bytes"
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeTree writes a small file tree: text, random, empty and zero-filled
// files, a copy of a file, nested directories, a symlink, odd modes.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	r := rand.New(rand.NewPCG(42, 42))
	random := make([]byte, 3<<20+123)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	var text bytes.Buffer
	for text.Len() < 2<<20 {
		text.WriteString("mtftpd deploys this line to a partition of a loop device\n")
	}
	files := map[string][]byte{
		"etc/hostname":         []byte("deployed\n"),
		"var/lib/random.bin":   random,
		"var/lib/random.copy":  random,
		"usr/share/doc/a.txt":  text.Bytes(),
		"usr/share/doc/empty":  nil,
		"srv/zeros.bin":        make([]byte, 1<<20),
		"deep/a/b/c/d/e/f.txt": []byte("deep"),
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "etc/hostname"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../etc/hostname", filepath.Join(dir, "srv/link")); err != nil {
		t.Fatal(err)
	}
}

// sameTree compares two trees' names, types, permissions, contents and
// link targets (lost+found, which mkfs adds, aside).
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	list := func(root string) map[string]string {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "lost+found" {
				return filepath.SkipDir
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			desc := info.Mode().String()
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				desc += " -> " + target
			case d.Type().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += " " + string(bytes.Clone(b))
			}
			out[rel] = desc
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	w, g := list(want), list(got)
	for name, d := range w {
		if g[name] != d {
			short := func(s string) string { return s[:min(len(s), 40)] }
			t.Errorf("%s: deployed %q, source %q", name, short(g[name]), short(d))
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok && name != "." {
			t.Errorf("%s: in the deployed tree only", name)
		}
	}
}

func TestDeployPartitionedDisk(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "mkfs.ext4", "e2fsck")
	ctx := context.Background()
	const size = 64 << 20
	tree := t.TempDir()
	makeTree(t, tree)

	// The source disk: a GPT with one ext4 partition made from the tree.
	srcFile := makeSparse(t, "source.raw", size)
	partitionFile(t, srcFile, "gpt")
	srcDev := losetup(t, srcFile, 1)
	run(t, "mkfs.ext4", "-q", "-d", tree, srcDev+"p1")

	// `image create` of it.
	src, err := OpenSource(ctx, srcFile)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := SourceMeta(src, "source.raw", "test")
	if err != nil {
		t.Fatal(err)
	}
	imgPath := filepath.Join(t.TempDir(), "disk.img")
	ix, err := WriteFile(ctx, src, imgPath, meta, CreateOptions{ChunkSize: 256 << 10, Workers: 2})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ix.Header.Meta.PartitionTable != "gpt" {
		t.Errorf("image metadata says partition table %q, want gpt", ix.Header.Meta.PartitionTable)
	}
	img, err := os.ReadFile(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	st := ix.Stats()
	t.Logf("raw %d bytes, image %d bytes, %d chunks: %+v", size, len(img), len(ix.Entries), st)

	// Deploy to a loop device full of garbage, the image's bytes in random
	// pieces and random order.
	dstFile := makeSparse(t, "target.raw", size)
	dst := losetup(t, dstFile, 0)
	tg, err := OpenTarget(dst, int64(ix.Header.RawSize), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	garbage(t, tg, tg.Size())
	if _, err := deployPieces(t, tg, img, ix, nil, wholeFile(ix), 21); err != nil {
		t.Fatal(err)
	}
	if err := VerifyTarget(ctx, tg, ix, 2); err != nil {
		t.Fatal(err)
	}
	tg.Close()

	// The deployed disk's partition: fsck clean, and the same files.
	waitPartitions(t, dst, 1)
	// -n: read-only, answer no; any problem is a nonzero exit (e2fsck(8)).
	out, err := exec.Command("e2fsck", "-fn", dst+"p1").CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %sp1: %v\n%s", dst, err, out)
	}
	t.Logf("e2fsck -fn: %s", strings.TrimSpace(string(out)))
	sameTree(t, tree, mount(t, dst+"p1", "-o", "ro"))
}
