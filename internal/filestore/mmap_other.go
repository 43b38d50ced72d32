//go:build !unix

package filestore

import (
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
)

// openFlags: systems without mmap here have no FIFO-blocking open either.
const openFlags = os.O_RDONLY

// mapFile stands in for mmap where the package has no mmap support: it reads
// the file into memory. It keeps the package building and testable
// elsewhere; the one-copy-per-file-version sharing still holds, only the
// copy lives on the Go heap rather than in the page cache.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("read: file of %d bytes does not fit the address space", size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), data); err != nil {
		return nil, fmt.Errorf("read %d bytes: %w", size, err)
	}
	return data, nil
}

func unmapFile([]byte) error { return nil }

func classifyErrno(error) error { return nil }

// devIno has no portable source here; the cache key falls back to name,
// size and mtime.
func devIno(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
