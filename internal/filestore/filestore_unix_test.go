//go:build unix

package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hangLimit bounds how long a test waits for an open that must not block.
// It is a hang detector, not a performance assertion.
const hangLimit = 10 * time.Second

func TestGetFIFO(t *testing.T) {
	root, s := newStore(t)
	fifo := filepath.Join(root, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	t.Cleanup(func() {
		// Unblock a hung open, if there is one, so the goroutine ends.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})

	// Through Get (refused by the pre-open check) and straight through
	// the open path (refused by fstat after an open that must not block).
	tries := map[string]func() error{
		"Get": func() error {
			f, err := s.Get("fifo")
			if err == nil {
				f.Release()
			}
			return err
		},
		"openRegular": func() error {
			f, _, _, err := s.openRegular("fifo")
			if err == nil {
				f.Close()
			}
			return err
		},
	}
	for how, try := range tries {
		done := make(chan error, 1)
		go func() { done <- try() }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrAccess) {
				t.Errorf("%s(fifo) = %v, want ErrAccess", how, err)
			}
		case <-time.After(hangLimit):
			t.Fatalf("%s(fifo) blocked for %v", how, hangLimit)
		}
	}
}

func TestGetSocket(t *testing.T) {
	root, s := newStore(t)
	l, err := net.Listen("unix", filepath.Join(root, "sock"))
	if err != nil {
		t.Skipf("cannot create a unix socket here: %v", err)
	}
	defer l.Close()
	f, err := s.Get("sock")
	if err == nil {
		f.Release()
	}
	checkErr(t, "sock", err, "sock", ErrAccess)
	// open(2) of a socket fails with ENXIO, which must mean ErrAccess too.
	if _, _, _, err := s.openRegular("sock"); !errors.Is(err, ErrAccess) {
		t.Errorf("openRegular(sock) = %v, want ErrAccess", err)
	}
}

func TestClassifyErrno(t *testing.T) {
	_, s := newStore(t)
	tests := []struct {
		errno unix.Errno
		want  error
	}{
		{unix.ENOENT, ErrNotFound},
		{unix.ENOTDIR, ErrNotFound},
		{unix.EACCES, ErrAccess}, // cannot be provoked as root, hence this table
		{unix.EPERM, ErrAccess},
		{unix.ELOOP, ErrAccess},
		{unix.ENXIO, ErrAccess},
		{unix.ENAMETOOLONG, ErrBadName},
		{unix.EIO, nil},
		{unix.EMFILE, nil},
	}
	for _, tt := range tests {
		err := s.classify(&fs.PathError{Op: "openat", Path: "x", Err: tt.errno})
		for _, sentinel := range []error{ErrNotFound, ErrAccess, ErrBadName} {
			if got := errors.Is(err, sentinel); got != (sentinel == tt.want) {
				t.Errorf("classify(%v) = %v: errors.Is(%v) = %v", tt.errno, err, sentinel, got)
			}
		}
		if !errors.Is(err, tt.errno) {
			t.Errorf("classify(%v) = %v lost the original errno", tt.errno, err)
		}
	}
}

// oneMiB returns 1 MiB of text lines, so the netascii size differs from
// the file size.
func oneMiB() []byte {
	line := append(bytes.Repeat([]byte("x"), 63), '\n')
	return bytes.Repeat(line, 1<<20/len(line))
}

func TestTruncatedUnderUs(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "big")
	writeFile(t, name, oneMiB())
	f := mustGet(t, s, "big")
	defer f.Release()
	if f.Truncated() {
		t.Fatal("Truncated before truncation")
	}

	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}
	if !f.Truncated() {
		t.Error("Truncated = false after the file was cut to 0 bytes")
	}
	// The first read of the mapping after truncation faults (SIGBUS); it
	// must come back as an error, and stay one.
	for range 2 {
		n, err := f.NetasciiSize()
		if !errors.Is(err, ErrFault) || n != 0 {
			t.Errorf("NetasciiSize after truncation = %d, %v; want 0 and a fault error", n, err)
		}
	}
	// The mapping still exists (Size is the mapped size); only its pages
	// are gone.
	if f.Size() != 1<<20/64*64 || len(f.Data()) != int(f.Size()) {
		t.Errorf("Size %d, len(Data) %d after truncation", f.Size(), len(f.Data()))
	}
}

// TestReadMapped: a read past the new end of a truncated mapping comes
// back as ErrFault at an address inside the mapping, not a crash; any other
// panic goes on; the goroutine's SetPanicOnFault setting is restored.
func TestReadMapped(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "big")
	writeFile(t, name, oneMiB())
	f := mustGet(t, s, "big")
	defer f.Release()
	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}
	data := f.Data()

	var got byte
	err := ReadMapped(func() { got = data[len(data)-1] })
	if !errors.Is(err, ErrFault) {
		t.Fatalf("read past EOF of a truncated mapping: %v (read %q), want ErrFault", err, got)
	}
	var addr uintptr
	if _, serr := fmt.Sscanf(err.Error()[strings.LastIndex(err.Error(), " at ")+4:], "%v", &addr); serr != nil {
		t.Fatalf("no address in %q: %v", err, serr)
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	if addr < start || addr >= start+uintptr(len(data)) {
		t.Errorf("fault at %#x, outside the mapping [%#x, %#x)", addr, start, start+uintptr(len(data)))
	}
	if debug.SetPanicOnFault(false) {
		t.Error("ReadMapped left SetPanicOnFault on")
	}

	for _, p := range []any{"a bug", errors.New("a bug"), runtimeError{}} {
		func() {
			defer func() {
				if r := recover(); r != p {
					t.Errorf("panic(%#v) came out as %#v", p, r)
				}
			}()
			err := ReadMapped(func() { panic(p) })
			t.Errorf("panic(%#v) swallowed into %v", p, err)
		}()
	}
	// Nested: the inner call restores the outer setting (on).
	ReadMapped(func() {
		ReadMapped(func() {})
		if !debug.SetPanicOnFault(true) {
			t.Error("inner ReadMapped turned SetPanicOnFault off for the outer one")
		}
	})
}

// runtimeError is a runtime.Error that is not a memory fault (no Addr).
type runtimeError struct{}

func (runtimeError) Error() string { return "runtime error: not a fault" }
func (runtimeError) RuntimeError() {}

// NetasciiSize is computed once per mapping and shared: a second handle
// gets the cached value without touching the (now truncated) pages.
func TestNetasciiSizeOncePerMapping(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "cfg")
	content := oneMiB()
	writeFile(t, name, content)
	a := mustGet(t, s, "cfg")
	defer a.Release()
	want := int64(len(content) + bytes.Count(content, []byte{'\n'}))
	if n, err := a.NetasciiSize(); n != want || err != nil {
		t.Fatalf("NetasciiSize = %d, %v; want %d", n, err, want)
	}
	b := mustGet(t, s, "cfg")
	defer b.Release()
	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := b.NetasciiSize(); n != want || err != nil {
		t.Errorf("second handle NetasciiSize = %d, %v; want cached %d", n, err, want)
	}
}
