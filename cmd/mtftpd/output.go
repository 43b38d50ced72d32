package main

import (
	"errors"
	"os"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
)

// openSpecial opens path for writing in place when it names an existing
// file that is not a regular one — /dev/null, /dev/stdout, a FIFO — and
// returns nil otherwise. atomicfile refuses to rename over such a file
// (as root that put a regular file where /dev/null was); there is no file
// to tear there, so the CLI writes to it directly, as a shell redirect
// would.
func openSpecial(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil || st.Mode().IsRegular() || st.IsDir() {
		return nil, nil
	}
	return os.OpenFile(path, os.O_WRONLY, 0)
}

// writeOutput writes b to path: stdout for "-", in place for a device or
// FIFO (openSpecial), else replacing the file whole (atomicfile).
func writeOutput(path string, b []byte) error {
	if path == "-" {
		_, err := os.Stdout.Write(b)
		return err
	}
	f, err := openSpecial(path)
	if err != nil {
		return err
	}
	if f == nil {
		return atomicfile.Write(path, b, 0o644)
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}
