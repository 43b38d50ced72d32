// Package atomicfile replaces a file so that a crash at any point leaves
// either the old content or the new, never a torn mix: the lease file
// (dhcp) and the imaging state file (imaging) are written through it.
//
// It never writes in place and never leaves a temp file behind on error.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// TempInfix marks the temp files of path: path + TempInfix + random.
// A loader may remove such files at start: a crash mid-write left them,
// and the real file was never replaced by them.
const TempInfix = ".tmp-"

// Write replaces path with data: write a temp file in the same directory
// (mode perm), fsync it, rename it over path, fsync the directory
// (without the last step the rename itself may be lost in a power cut).
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+TempInfix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil // renamed; only the directory fsync is lost
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// RemoveTemps removes the temp files Write left beside path when a crash
// cut it short, and returns their names.
func RemoveTemps(path string) []string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, globEscape(base)+TempInfix+"*"))
	for _, t := range tmps {
		os.Remove(t)
	}
	return tmps
}

// globEscape quotes filepath.Match's metacharacters in s.
func globEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}
