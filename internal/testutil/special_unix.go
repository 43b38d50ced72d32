//go:build unix

package testutil

import (
	"os"
	"syscall"
)

// Mkfifo makes a named pipe at path: a file that a server must refuse to
// open, since a read would block until a writer comes.
func Mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }

// AllocatedBytes is how much disk a file's blocks take (st_blocks, in
// 512-byte units whatever the file system's block size; stat(2)).
func AllocatedBytes(fi os.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int64(st.Blocks) * 512, true
}
