// Package atomicfile replaces a file so that a crash at any point leaves
// either the old content or the new, never a torn mix. Every file mtftpd
// writes whole goes through it: the lease file (dhcp), the imaging state
// file and captures (imaging), TFTP uploads (tftp), the origin cache
// (internal/origin), images (image), and the CLI's downloads, initrds and
// benchmark reports.
//
// It never writes in place and never leaves a temp file behind on error.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// TempInfix marks the temp files of path: path + TempInfix + random.
// A loader may remove such files at start: a crash mid-write left them,
// and the real file was never replaced by them.
const TempInfix = ".tmp-"

// ErrSyncDir reports that the new file is in place but the fsync of its
// directory failed: the rename may not survive a power cut.
var ErrSyncDir = errors.New("directory fsync failed")

// ErrNotRegular refuses a target that exists and is neither a regular
// file nor a symbolic link: a device, a FIFO, a socket, a directory. A
// rename over /dev/null, run as root, put a regular file where the device
// was (seen on the lab machine: every later "> /dev/null" filled it and
// dnsmasq's --conf-file=/dev/null read it). Such a target is no file to
// tear: a caller that means to write to it opens it itself.
var ErrNotRegular = errors.New("not a regular file")

// replaceable checks that name may be replaced by a rename: it does not
// exist, or is a regular file or a symbolic link (the link is replaced,
// not its target, as before).
func replaceable(root *os.Root, name string) error {
	st, err := root.Lstat(name)
	if err != nil || st.Mode().IsRegular() || st.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	return fmt.Errorf("atomicfile: %s is a %s: %w", name, kindOf(st.Mode()), ErrNotRegular)
}

func kindOf(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// Write replaces path with data (mode perm) through Create and Commit.
func Write(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	return f.commitData(data)
}

// WriteIn replaces name inside root with data through CreateIn and Commit.
func WriteIn(root *os.Root, name, tempPattern string, data []byte, perm os.FileMode) error {
	f, err := CreateIn(root, name, tempPattern, perm)
	if err != nil {
		return err
	}
	return f.commitData(data)
}

func (f *File) commitData(data []byte) error {
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", f.tmp, err)
	}
	return f.Commit()
}

// File is a new version of a file being written: its bytes go to a temp
// file in the same filesystem, and Commit puts it in place whole. Read,
// write, seek, truncate and stat it through the embedded *os.File; do not
// Close it: Commit or Abort does. A File is not safe for concurrent use.
type File struct {
	*os.File
	root     *os.Root
	ownRoot  bool   // root was opened by Create: Commit and Abort close it
	tmp, dst string // names inside root
	done     bool   // committed or aborted: Abort is a no-op
	closed   bool   // f.File was closed
}

// Create starts a new version of path with mode perm (umask not
// applied): a temp file path + TempInfix + random beside it.
func Create(path string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	f, err := CreateIn(root, base, base+TempInfix+"*", perm)
	if err != nil {
		root.Close()
		return nil, err
	}
	f.ownRoot = true
	return f, nil
}

// tempTries bounds the search for a free temp name; with 48 random bits a
// second try is already improbable.
const tempTries = 100

// CreateIn starts a new version of name inside root with mode perm (umask
// not applied). The temp file is tempPattern, a name inside root whose
// last "*" is replaced by 12 random hex digits (as os.CreateTemp); it must
// be on name's filesystem, or Commit's rename fails. The caller keeps
// root open until Commit or Abort.
func CreateIn(root *os.Root, name, tempPattern string, perm os.FileMode) (*File, error) {
	i := strings.LastIndex(tempPattern, "*")
	if i < 0 {
		return nil, fmt.Errorf("atomicfile: temp pattern %q has no *", tempPattern)
	}
	if err := replaceable(root, name); err != nil {
		return nil, err
	}
	for range tempTries {
		var rnd [6]byte
		rand.Read(rnd[:])
		tmp := tempPattern[:i] + hex.EncodeToString(rnd[:]) + tempPattern[i+1:]
		f, err := root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("atomicfile: %w", err)
		}
		if err := f.Chmod(perm); err != nil {
			f.Close()
			root.Remove(tmp)
			return nil, fmt.Errorf("atomicfile: %w", err)
		}
		return &File{File: f, root: root, tmp: tmp, dst: name}, nil
	}
	return nil, fmt.Errorf("atomicfile: no free temp name for %q after %d tries", tempPattern, tempTries)
}

// TempName is the temp file's name inside its root.
func (f *File) TempName() string { return f.tmp }

// Commit puts the new version in place over any old one: it fsyncs and
// closes the temp file, renames it to the target and fsyncs the directory
// (without the last step the rename itself may be lost in a power cut).
// On an error before the rename the temp file is removed and the target
// untouched; an error wrapping ErrSyncDir means the new file is in place.
func (f *File) Commit() error { return f.commit(false, nil, nil) }

// CommitNew is Commit that never replaces: if the target exists, or
// appears meanwhile, the temp file is removed and the error wraps
// fs.ErrExist. It links the temp file to the target (which fails if it
// exists); where the filesystem has no hard links (vfat, some FUSE and
// NFS) it falls back to a check and a rename, which leaves a small race.
func (f *File) CommitNew() error { return f.commit(true, nil, nil) }

// CommitUnder is Commit with mu held across the rename and then: a caller
// that books the new file (a cache's size accounting) atomically with its
// appearance. The fsyncs run outside mu; then runs only if the rename
// succeeded.
func (f *File) CommitUnder(mu sync.Locker, then func()) error {
	return f.commit(false, mu, then)
}

func (f *File) commit(noReplace bool, mu sync.Locker, then func()) error {
	if f.done {
		return fmt.Errorf("atomicfile: %s: %w", f.dst, os.ErrClosed)
	}
	defer f.Abort()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", f.tmp, err)
	}
	f.closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", f.tmp, err)
	}
	if mu != nil {
		mu.Lock()
	}
	err := f.place(noReplace)
	if err == nil && then != nil {
		then()
	}
	if mu != nil {
		mu.Unlock()
	}
	if err != nil {
		return err
	}
	f.tmp = "" // renamed or linked and removed: nothing for Abort to remove
	return f.syncDir()
}

// place renames (or links) the closed temp file to the target.
func (f *File) place(noReplace bool) error {
	if err := replaceable(f.root, f.dst); err != nil {
		return err
	}
	if !noReplace {
		if err := f.root.Rename(f.tmp, f.dst); err != nil {
			return fmt.Errorf("atomicfile: %w", err)
		}
		return nil
	}
	err := f.root.Link(f.tmp, f.dst)
	switch {
	case err == nil:
		f.root.Remove(f.tmp)
		return nil
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS):
		if _, serr := f.root.Lstat(f.dst); serr == nil {
			return fmt.Errorf("atomicfile: %s: %w", f.dst, fs.ErrExist)
		}
		if err := f.root.Rename(f.tmp, f.dst); err != nil {
			return fmt.Errorf("atomicfile: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("atomicfile: %w", err)
	}
}

// syncDir fsyncs the target's directory so that the rename is on disk.
func (f *File) syncDir() error {
	dir := filepath.Dir(f.dst)
	d, err := f.root.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: open directory %s: %w: %w", dir, ErrSyncDir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync directory %s: %w: %w", dir, ErrSyncDir, err)
	}
	return nil
}

// Abort discards the new version: it closes and removes the temp file and
// leaves the target untouched. It is a no-op after Commit or Abort, so
// callers defer it right after Create.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	if !f.closed {
		f.Close()
	}
	if f.tmp != "" {
		f.root.Remove(f.tmp)
	}
	if f.ownRoot {
		f.root.Close()
	}
}

// RemoveTemps removes the temp files Create left beside path when a crash
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
