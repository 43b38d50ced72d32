//go:build unix

package mtftp

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// outputMap is the native receiver's view of its output file: a shared
// read-write mapping, so repaired and received shards are written where
// they lie and the final SHA-256 reads the page cache, never a copy.
type outputMap struct{ data []byte }

// mapOutput maps the first size bytes of out, which the caller has
// truncated to size. size must be > 0 (mmap(2) of length 0 is EINVAL).
func mapOutput(out *os.File, size int64) (outputMap, error) {
	data, err := unix.Mmap(int(out.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return outputMap{}, fmt.Errorf("mtftp: map the output file: %w", err)
	}
	return outputMap{data: data}, nil
}

// flush writes the mapping back to the file (msync MS_SYNC).
func (m outputMap) flush() error {
	if err := unix.Msync(m.data, unix.MS_SYNC); err != nil {
		return fmt.Errorf("mtftp: flush the output file: %w", err)
	}
	return nil
}

// unmap releases the mapping; the data stays in the file.
func (m outputMap) unmap() { unix.Munmap(m.data) }

// reuseAddrControl sets SO_REUSEADDR, so that many receivers on one host
// can bind one group's port.
func reuseAddrControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
	return errors.Join(err, serr)
}
