//go:build unix

package filestore

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
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
		if !errors.Is(err, errFault) || n != 0 {
			t.Errorf("NetasciiSize after truncation = %d, %v; want 0 and a fault error", n, err)
		}
	}
	// The mapping still exists (Size is the mapped size); only its pages
	// are gone.
	if f.Size() != 1<<20/64*64 || len(f.Data()) != int(f.Size()) {
		t.Errorf("Size %d, len(Data) %d after truncation", f.Size(), len(f.Data()))
	}
}

// The sender's pattern: read the mapping in its own goroutine under
// SetPanicOnFault and recover. This proves the runtime turns SIGBUS on a
// truncated mapping into a recoverable panic here.
func TestFaultRecoveryInGoroutine(t *testing.T) {
	root, s := newStore(t)
	name := filepath.Join(root, "big")
	writeFile(t, name, oneMiB())
	f := mustGet(t, s, "big")
	defer f.Release()
	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}

	data := f.Data()
	type result struct {
		addr    uintptr
		fault   bool
		read    byte
		noPanic bool
	}
	done := make(chan result, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			r := recover()
			addr, ok := faultAddr(r)
			done <- result{addr: addr, fault: ok}
		}()
		b := data[len(data)-1]
		done <- result{read: b, noPanic: true}
	}()
	r := <-done
	if r.noPanic {
		t.Fatalf("read past EOF of a truncated mapping returned %q instead of faulting", r.read)
	}
	if !r.fault {
		t.Fatal("recovered value is not a memory fault")
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	if r.addr < start || r.addr >= start+uintptr(len(data)) {
		t.Errorf("fault at %#x, outside the mapping [%#x, %#x)", r.addr, start, start+uintptr(len(data)))
	}
}

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
