package image

import (
	"errors"
	"fmt"
	"os"
)

// Sentinels of OpenTarget's refusals, wrapped by *TargetError (errors.Is works).
var (
	ErrTargetInUse    = errors.New("image: target in use")
	ErrTargetTooSmall = errors.New("image: target too small")
	ErrTargetRoot     = errors.New("image: target holds the running system")
	ErrNotTarget      = errors.New("image: target is neither a block device nor a regular file")
)

// TargetError is why a disk was refused (or failed) as a deploy target. What
// names the device and the reason, as a person would need to fix it:
// "image: target /dev/sdb: /dev/sdb1 is mounted on /mnt".
type TargetError struct {
	Path string
	What string
	Err  error
}

func (e *TargetError) Error() string {
	if e.What == "" {
		return fmt.Sprintf("image: target %s: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("image: target %s: %s", e.Path, e.What)
}

func (e *TargetError) Unwrap() error { return e.Err }

// TargetOptions changes how OpenTarget opens a disk. The zero value opens it
// for deploying.
type TargetOptions struct {
	// ReadOnly opens the target for Scan and VerifyTarget only: nothing is
	// created or grown, WriteAt and ZeroRange fail, and a mounted disk is
	// not refused (reading one is harmless, if not meaningful).
	ReadOnly bool
}

// Target is the disk an image is deployed to: a block device opened
// exclusively, or a regular file. ReadAt, WriteAt and ZeroRange are safe
// for concurrent use on disjoint ranges (pread/pwrite); Close must come
// after every other call has returned.
type Target struct {
	f        *os.File
	path     string
	size     int64
	block    bool
	readOnly bool
}

// Path is the name the target was opened by.
func (t *Target) Path() string { return t.path }

// Size is the target's size in bytes: a block device's capacity, a regular
// file's length (at least the raw size it was opened for).
func (t *Target) Size() int64 { return t.size }

// IsBlockDevice says whether the target is a block device.
func (t *Target) IsBlockDevice() bool { return t.block }

func (t *Target) check(op string, off, n int64) error {
	if t.readOnly && op != "read" {
		return &TargetError{Path: t.path, What: op + ": opened read-only", Err: os.ErrPermission}
	}
	if off < 0 || n < 0 || off > t.size || n > t.size-off {
		return &TargetError{Path: t.path, What: fmt.Sprintf("%s of %d bytes at %d: past the end (%d bytes)", op, n, off, t.size),
			Err: ErrTargetTooSmall}
	}
	return nil
}

// WriteAt writes p at off; a write past Size is refused.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if err := t.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	return t.f.WriteAt(p, off)
}

// ReadAt reads len(p) bytes at off.
func (t *Target) ReadAt(p []byte, off int64) (int, error) {
	if err := t.check("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	return t.f.ReadAt(p, off)
}

// ZeroRange makes n bytes at off read as zeros, as cheaply as the target
// allows: BLKZEROOUT on a block device (the device's own write-zeroes or
// unmap, or the kernel writing zeros), a punched hole in a regular file;
// writing zeros where neither works.
func (t *Target) ZeroRange(off, n int64) error {
	if err := t.check("zero", off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return t.zeroRange(off, n)
}

// Sync flushes every write to stable storage (fsync).
func (t *Target) Sync() error { return t.f.Sync() }

// Close releases the target (and, for a block device, its exclusive open).
// It does not sync.
func (t *Target) Close() error { return t.f.Close() }

// zeroBlock is what writeZeros writes, 1 MiB at a time.
var zeroBlock = make([]byte, 1<<20)

// writeZeros is the fallback of ZeroRange: plain writes of zeros.
func (t *Target) writeZeros(off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroBlock)))
		if _, err := t.f.WriteAt(zeroBlock[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// sizeString renders a byte count for an error message: "512 MiB" when it is
// a whole number of a binary unit, else "1.5 GiB (1610612736 bytes)".
func sizeString(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	u, v := 0, n
	for v >= 1024 && v%1024 == 0 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if v < 1024 || u == len(units)-1 {
		return fmt.Sprintf("%d %s", v, units[u])
	}
	f, u := float64(n), 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %s (%d bytes)", f, units[u], n)
}
