package image

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Where the kernel tells what uses a block device.
const (
	sysDevBlock   = "/sys/dev/block"
	procMountinfo = "/proc/self/mountinfo"
	procSwaps     = "/proc/swaps"
)

// OpenTarget opens the disk an image of rawSize bytes is deployed to.
//
// A regular file is created if missing and grown (sparsely) to rawSize if
// smaller. A block device is refused, before anything is written, when it
// is smaller than rawSize, when it or one of its partitions is mounted, an
// active swap area, or held by another block device (device-mapper, LVM,
// md: /sys/class/block/<dev>/holders), and when it holds the running
// system's root file system. It is then opened O_EXCL, so the kernel itself
// refuses a device that is mounted or opened exclusively by anyone else,
// and keeps it from being mounted while the Target is open.
func OpenTarget(path string, rawSize int64, opts TargetOptions) (*Target, error) {
	if rawSize <= 0 {
		return nil, &TargetError{Path: path, What: fmt.Sprintf("raw size %d", rawSize), Err: ErrTargetTooSmall}
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !opts.ReadOnly:
		return openFile(path, rawSize, opts)
	case err != nil:
		return nil, &TargetError{Path: path, Err: err}
	case st.Mode().IsRegular():
		return openFile(path, rawSize, opts)
	case st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		return openBlock(path, rawSize, opts)
	}
	return nil, &TargetError{Path: path, What: fmt.Sprintf("is a %v, not a block device or a regular file", st.Mode().Type()),
		Err: ErrNotTarget}
}

func openFile(path string, rawSize int64, opts TargetOptions) (*Target, error) {
	flag := os.O_RDWR | os.O_CREATE
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, &TargetError{Path: path, Err: err}
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = &TargetError{Path: path, What: "changed into a non-regular file while being opened", Err: ErrNotTarget}
	}
	size := int64(0)
	if err == nil {
		size = st.Size()
		if size < rawSize {
			if opts.ReadOnly {
				err = &TargetError{Path: path, What: fmt.Sprintf("is %s, the image needs %s", sizeString(size), sizeString(rawSize)),
					Err: ErrTargetTooSmall}
			} else if err = f.Truncate(rawSize); err == nil {
				size = rawSize
			}
		}
	}
	if err != nil {
		f.Close()
		var te *TargetError
		if !errors.As(err, &te) {
			err = &TargetError{Path: path, Err: err}
		}
		return nil, err
	}
	return &Target{f: f, path: path, size: size, readOnly: opts.ReadOnly}, nil
}

func openBlock(path string, rawSize int64, opts TargetOptions) (*Target, error) {
	refuse := func(sentinel error, format string, args ...any) (*Target, error) {
		return nil, &TargetError{Path: path, What: fmt.Sprintf(format, args...), Err: sentinel}
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, &TargetError{Path: path, Err: err}
	}
	dev := devNum{unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))}
	if !opts.ReadOnly {
		if err := checkUnused(path, dev); err != nil {
			return nil, err
		}
	}
	flag := os.O_RDWR | unix.O_EXCL
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, unix.EBUSY) {
		return refuse(ErrTargetInUse, "the kernel refuses an exclusive open (mounted, or opened exclusively by another program): %v", err)
	}
	if err != nil {
		return nil, &TargetError{Path: path, Err: err}
	}
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil || fst.Rdev != st.Rdev {
		f.Close()
		return refuse(ErrNotTarget, "changed into another device while being opened")
	}
	size, err := f.Seek(0, 2) // a block device's end is its capacity
	if err == nil {
		_, err = f.Seek(0, 0)
	}
	if err != nil {
		f.Close()
		return nil, &TargetError{Path: path, Err: err}
	}
	if size < rawSize {
		f.Close()
		return refuse(ErrTargetTooSmall, "is %s, the image needs %s", sizeString(size), sizeString(rawSize))
	}
	return &Target{f: f, path: path, size: size, block: true, readOnly: opts.ReadOnly}, nil
}

type devNum struct{ major, minor uint32 }

func (d devNum) String() string { return fmt.Sprintf("%d:%d", d.major, d.minor) }

func parseDevNum(s string) (devNum, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return devNum{}, false
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	return devNum{uint32(ma), uint32(mi)}, err1 == nil && err2 == nil
}

// blockFamily is a block device and its partitions, by device number, with
// their kernel names (sda, sda1, ...).
type blockFamily struct {
	names map[devNum]string
	dirs  map[devNum]string // their /sys directories
}

// family reads /sys/dev/block/<dev> for the device and its partitions (the
// subdirectories holding a "partition" file).
func family(dev devNum) (*blockFamily, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysDevBlock, dev.String()))
	if err != nil {
		return nil, err
	}
	fam := &blockFamily{names: map[devNum]string{dev: filepath.Base(dir)}, dirs: map[devNum]string{dev: dir}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, "partition")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sub, "dev"))
		if err != nil {
			return nil, err
		}
		if d, ok := parseDevNum(string(b)); ok {
			fam.names[d] = e.Name()
			fam.dirs[d] = sub
		}
	}
	return fam, nil
}

// checkUnused refuses a block device that is (or has a partition that is)
// the root file system, mounted, swap, or held by another block device.
func checkUnused(path string, dev devNum) error {
	refuse := func(sentinel error, format string, args ...any) error {
		return &TargetError{Path: path, What: fmt.Sprintf(format, args...), Err: sentinel}
	}
	fam, err := family(dev)
	if err != nil {
		return refuse(ErrTargetInUse, "cannot tell whether it is in use (%v), refusing to write", err)
	}
	// Resolving a mount's source (/dev/...) to its device number covers
	// file systems whose mountinfo major:minor is an anonymous device
	// (btrfs reports 0:NN).
	inFamily := func(d devNum, source string) (string, bool) {
		if n, ok := fam.names[d]; ok {
			return n, true
		}
		if !strings.HasPrefix(source, "/dev/") {
			return "", false
		}
		var st unix.Stat_t
		if unix.Stat(source, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return "", false
		}
		n, ok := fam.names[devNum{unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))}]
		return n, ok
	}
	mounts, err := readMountinfo()
	if err != nil {
		return refuse(ErrTargetInUse, "cannot read the mount table (%v), refusing to write", err)
	}
	// The root first: it is the most important reason and the clearest message.
	for _, m := range mounts {
		if m.point != "/" {
			continue
		}
		if n, ok := inFamily(m.dev, m.source); ok {
			return refuse(ErrTargetRoot, "/dev/%s holds the running system's root file system (/ is %s)", n, m.source)
		}
	}
	for _, m := range mounts {
		if n, ok := inFamily(m.dev, m.source); ok {
			return refuse(ErrTargetInUse, "/dev/%s is mounted on %s", n, m.point)
		}
	}
	if swaps, err := os.ReadFile(procSwaps); err == nil {
		for i, line := range strings.Split(string(swaps), "\n") {
			if f := strings.Fields(line); i > 0 && len(f) > 0 {
				if n, ok := inFamily(devNum{}, unescapeMount(f[0])); ok {
					return refuse(ErrTargetInUse, "/dev/%s is an active swap area", n)
				}
			}
		}
	}
	for d, dir := range fam.dirs {
		ents, err := os.ReadDir(filepath.Join(dir, "holders"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return refuse(ErrTargetInUse, "cannot read the holders of /dev/%s (%v), refusing to write", fam.names[d], err)
		}
		if len(ents) > 0 {
			h := ents[0].Name()
			if b, err := os.ReadFile(filepath.Join(dir, "holders", h, "dm", "name")); err == nil {
				h += " (device-mapper " + strings.TrimSpace(string(b)) + ")"
			}
			return refuse(ErrTargetInUse, "/dev/%s is held by %s (device-mapper, LVM, md or similar)", fam.names[d], h)
		}
	}
	return nil
}

type mountEntry struct {
	dev    devNum
	point  string
	source string
}

// readMountinfo parses /proc/self/mountinfo (proc(5)): "36 35 98:0 /mnt1
// /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open(procMountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		d, ok := parseDevNum(fields[2])
		if !ok {
			continue
		}
		m := mountEntry{dev: d, point: unescapeMount(fields[4])}
		for i := 6; i+2 < len(fields); i++ {
			if fields[i] == "-" {
				m.source = unescapeMount(fields[i+2])
				break
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeMount undoes the kernel's octal escapes of space, tab, newline
// and backslash in mount table fields (\040 etc.).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (t *Target) zeroRange(off, n int64) error {
	if !t.block {
		err := unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return &TargetError{Path: t.path, What: fmt.Sprintf("punching a hole of %d bytes at %d: %v", n, off, err), Err: err}
		}
		return t.writeZeros(off, n)
	}
	// BLKZEROOUT takes whole logical blocks (blkdev_issue_zeroout refuses
	// anything else with EINVAL); an unaligned head or tail is written.
	bs := int64(512)
	if v, err := unix.IoctlGetInt(int(t.f.Fd()), unix.BLKSSZGET); err == nil && v > 0 {
		bs = int64(v)
	}
	start := (off + bs - 1) / bs * bs
	end := (off + n) / bs * bs
	if start >= end {
		return t.writeZeros(off, n)
	}
	if start > off {
		if err := t.writeZeros(off, start-off); err != nil {
			return err
		}
	}
	if end < off+n {
		if err := t.writeZeros(end, off+n-end); err != nil {
			return err
		}
	}
	r := [2]uint64{uint64(start), uint64(end - start)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, t.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r)))
	switch errno {
	case 0:
		return nil
	case unix.EOPNOTSUPP, unix.ENOTTY, unix.EINVAL:
		return t.writeZeros(start, end-start)
	}
	return &TargetError{Path: t.path, What: fmt.Sprintf("BLKZEROOUT of %d bytes at %d: %v", end-start, start, errno), Err: errno}
}
