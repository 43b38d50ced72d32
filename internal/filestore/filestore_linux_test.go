package filestore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestGetDevice(t *testing.T) {
	root, s := newStore(t)
	dev := filepath.Join(root, "null")
	// The same numbers as /dev/null (1, 3; Documentation/admin-guide/devices.txt).
	if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot create a device node here (needs root/CAP_MKNOD): %v", err)
	}
	f, err := s.Get("null")
	if err == nil {
		f.Release()
	}
	checkErr(t, "null", err, "null", ErrAccess)
	// Past the pre-open check, the open path refuses it as well (by fstat,
	// or by EPERM where a device cgroup forbids opening it).
	if _, _, _, err := s.openRegular("null"); !errors.Is(err, ErrAccess) {
		t.Errorf("openRegular(null) = %v, want ErrAccess", err)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

func mapped(t *testing.T, path string) bool {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	return bytes.Contains(maps, []byte(path))
}

// One descriptor and one mapping per file version, both gone after the
// last Release; a cache hit must not keep its own descriptor.
func TestDescriptorsAndMappingsFreed(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "kernel-image")
	writeFile(t, name, bytes.Repeat([]byte("k"), 8192))
	// Warm up: the first O_NONBLOCK open may create the runtime poller's
	// own descriptors.
	mustGet(t, s, "kernel-image").Release()

	before := countFDs(t)
	a := mustGet(t, s, "kernel-image")
	b := mustGet(t, s, "kernel-image")
	if got := countFDs(t); got != before+1 {
		t.Errorf("two Gets of one file hold %d descriptors, want 1", got-before)
	}
	if !mapped(t, name) {
		t.Error("file not in /proc/self/maps while held")
	}
	a.Release()
	b.Release()
	if got := countFDs(t); got != before {
		t.Errorf("%d descriptors left after the last Release", got-before)
	}
	if mapped(t, name) {
		t.Error("file still mapped after the last Release")
	}
}
