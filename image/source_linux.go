package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sourceSize is a file's size, or a block device's from the BLKGETSIZE64
// ioctl (linux/fs.h), which unlike a seek to the end also works on devices
// opened by a driver that does not implement llseek.
func sourceSize(f *os.File, device bool) (int64, error) {
	if !device {
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	var size uint64
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, fmt.Errorf("BLKGETSIZE64: %w; seek to end: %w", errno, err)
		}
		return end, nil
	}
	return int64(size), nil
}

// adviseSequential tells the kernel the file is read front to back, so
// readahead grows (posix_fadvise(2)). Advice only: errors are ignored.
func adviseSequential(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Fadvise(int(fd), 0, 0, unix.FADV_SEQUENTIAL) })
	}
}

// fileExtents lists the data ranges of f with lseek(2) SEEK_DATA and
// SEEK_HOLE, so unallocated ranges of a sparse file are never read. A
// filesystem or device without them gets one extent for everything (the
// kernel's generic fallback already reports a whole file or device as
// data). The loop ends: each step moves strictly forward, within size.
func fileExtents(ctx context.Context, f *os.File, size int64) ([]Extent, error) {
	var ext []Extent
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return wholeExtent(size), nil
		}
		if err != nil {
			return nil, fmt.Errorf("image: SEEK_DATA at %d: %w", off, err)
		}
		if data >= size {
			break
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("image: SEEK_HOLE at %d: %w", data, err)
		}
		hole = min(hole, size)
		if hole <= data {
			return wholeExtent(size), nil // a filesystem that contradicts itself: read everything
		}
		ext = append(ext, Extent{data, hole - data})
		off = hole
	}
	return ext, nil
}

// setChildDeath makes the kernel send SIGTERM to the child when this
// process dies, so a crash does not leave qemu-nbd running.
func setChildDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
