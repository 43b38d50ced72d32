//go:build !unix

package testutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

var errSpecial = fmt.Errorf("testutil: special files need a Unix system (GOOS=%s): %w", runtime.GOOS, errors.ErrUnsupported)

// Mkfifo fails here: see errSpecial.
func Mkfifo(string) error { return errSpecial }

// AllocatedBytes is not known here.
func AllocatedBytes(os.FileInfo) (int64, bool) { return 0, false }
