//go:build unix

package testutil

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockHeavy takes an exclusive flock on one file in the temp dir shared
// by every test binary of the machine; closing the file releases it
// (also when the process dies). It waits while another test holds it:
// each holder is bounded by its own timeouts.
func lockHeavy() (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "mtftpd-heavy-tests.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
