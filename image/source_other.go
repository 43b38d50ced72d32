//go:build !linux

package image

import (
	"context"
	"io"
	"os"
	"os/exec"
)

// sourceSize is a file's size, or a device's from a seek to its end.
func sourceSize(f *os.File, device bool) (int64, error) {
	if device {
		return f.Seek(0, io.SeekEnd)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func adviseSequential(*os.File) {}

// fileExtents: without a portable SEEK_DATA everything is read; all-zero
// chunks still become holes.
func fileExtents(_ context.Context, _ *os.File, size int64) ([]Extent, error) {
	return wholeExtent(size), nil
}

func setChildDeath(*exec.Cmd) {}
