//go:build !linux

package dhcp

import "os"

// fdatasync is f.Sync where the system has no fdatasync (on macOS it
// asks the drive to flush too: F_FULLFSYNC).
func fdatasync(f *os.File) error { return f.Sync() }
