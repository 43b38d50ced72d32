//go:build !linux

package testutil

import (
	"errors"
	"fmt"
	"runtime"
)

// MkCharDevice fails here: device numbers are encoded per system, and only
// Linux's are known to the tests.
func MkCharDevice(string, uint32, uint32) error {
	return fmt.Errorf("testutil: device entries need Linux here (GOOS=%s): %w", runtime.GOOS, errors.ErrUnsupported)
}
