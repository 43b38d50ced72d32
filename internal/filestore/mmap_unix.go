//go:build unix

package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openFlags never block and never acquire a terminal: O_NONBLOCK makes
// open(2) of a FIFO return at once instead of waiting for a writer, and
// O_NOCTTY stops a tty device from becoming our controlling terminal, should
// one slip past the pre-open mode check (a rename race).
const openFlags = os.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY

// mapFile maps the first size bytes of f read-only. size must be the size
// fstat reported for f. An empty file has no mapping: mmap(2) of length 0
// fails with EINVAL, and there is nothing to share.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("mmap: file of %d bytes does not fit the address space", size)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	var data []byte
	var merr error
	// Control rather than f.Fd: Fd would switch the descriptor to blocking
	// mode, a needless fcntl for every new mapping.
	if err := rc.Control(func(fd uintptr) {
		data, merr = unix.Mmap(int(fd), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	}); err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	if merr != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, merr)
	}
	// MADV_* are advice values, not bit flags (SEQUENTIAL=2, WILLNEED=3 on
	// Linux; OR-ing them would silently give WILLNEED alone), so each needs
	// its own call. Advice is best effort; failure changes only speed.
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	_ = unix.Madvise(data, unix.MADV_WILLNEED)
	return data, nil
}

// unmapFile releases a mapping made by mapFile.
func unmapFile(data []byte) error {
	if data == nil {
		return nil
	}
	return unix.Munmap(data)
}

// classifyErrno maps OS errors that the portable fs.Err* values do not
// cover onto this package's sentinels, or returns nil.
func classifyErrno(err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return nil
	}
	switch errno {
	case unix.ENOTDIR: // a middle component is a file: "pxelinux.0/x"
		return ErrNotFound
	case unix.ELOOP, // symlink loop, or too many links in a chain
		unix.ENXIO, // open(2) of a socket or a FIFO/device without a peer
		unix.ENODEV, unix.EISDIR:
		return ErrAccess
	case unix.ENAMETOOLONG: // one element longer than NAME_MAX
		return ErrBadName
	}
	return nil
}

// devIno returns the device and inode numbers from an fstat result.
func devIno(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}
