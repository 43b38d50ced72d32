package testutil

import "golang.org/x/sys/unix"

// MkCharDevice makes a character device entry at path (root only).
func MkCharDevice(path string, major, minor uint32) error {
	return unix.Mknod(path, unix.S_IFCHR|0o644, int(unix.Mkdev(major, minor)))
}
