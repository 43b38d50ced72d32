//go:build unix

package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRefusesSpecialFiles: a device, FIFO or directory in the target's
// place is never replaced by a regular file (a rename over /dev/null, as
// root, did that); the error says what the target is.
func TestRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, kind string }{{fifo, "FIFO"}, {sub, "directory"}}
	if os.Geteuid() == 0 {
		// A null device of the test's own (1, 3 as /dev/null): a
		// regression must not clobber the machine's.
		null := filepath.Join(dir, "null")
		if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ path, kind string }{null, "character device"})
	}
	for _, c := range cases {
		err := Write(c.path, []byte("x"), 0o644)
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), c.kind) {
			t.Errorf("Write %s: %v, want ErrNotRegular naming a %s", c.path, err, c.kind)
		}
		st, serr := os.Lstat(c.path)
		if serr != nil || st.Mode().IsRegular() {
			t.Fatalf("%s was replaced: %v %v", c.path, st.Mode(), serr)
		}
	}
	// The target turns special between Create and Commit: still refused.
	p := filepath.Join(dir, "late")
	f, err := Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("Commit over a FIFO made meanwhile: %v, want ErrNotRegular", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != len(cases)+1 {
		t.Fatalf("temp file left behind: %v", entries)
	}
}
