//go:build !unix

package mtftp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
)

// outputMap stands in for the shared mapping of os_unix.go where there is
// no mmap here: the whole file is held on the Go heap (as much memory as
// the file is large) and written back by flush. Slower, but the file ends
// up the same.
type outputMap struct {
	data []byte
	out  *os.File
}

// mapOutput reads the first size bytes of out (truncated to size by the
// caller) into memory.
func mapOutput(out *os.File, size int64) (outputMap, error) {
	if int64(int(size)) != size {
		return outputMap{}, fmt.Errorf("mtftp: output file of %d bytes does not fit the address space", size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(out, 0, size), data); err != nil {
		return outputMap{}, fmt.Errorf("mtftp: read the output file: %w", err)
	}
	return outputMap{data: data, out: out}, nil
}

// flush writes the buffer to the file and syncs it.
func (m outputMap) flush() error {
	if _, err := m.out.WriteAt(m.data, 0); err != nil {
		return fmt.Errorf("mtftp: flush the output file: %w", err)
	}
	if err := m.out.Sync(); err != nil {
		return fmt.Errorf("mtftp: flush the output file: %w", err)
	}
	return nil
}

func (m outputMap) unmap() {}

// errReuseAddr: SO_REUSEADDR has other semantics on Windows (it lets any
// socket steal the port), and binding a group address is Unix behaviour.
var errReuseAddr = fmt.Errorf("mtftp: joining a multicast group's port is not supported on this system (GOOS=%s): %w", runtime.GOOS, errors.ErrUnsupported)

func reuseAddrControl(_, _ string, _ syscall.RawConn) error { return errReuseAddr }
