package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// Source is a disk to image.
type Source interface {
	// ReadAt reads raw disk bytes. Create calls it from one goroutine.
	io.ReaderAt
	// Size is the raw disk size in bytes.
	Size() int64
	// Extents returns the ranges that may hold nonzero bytes, in order,
	// not overlapping, within [0, Size). Bytes outside them read as zero
	// and are never read.
	Extents(ctx context.Context) ([]Extent, error)
	Close() error
}

// Extent is a range of a Source that may hold data.
type Extent struct {
	Off, Len int64
}

// OpenSource opens path as a disk to image: a block device or raw file is
// read directly (only its allocated extents, where the OS can tell); a file
// in any other format qemu-img knows (qcow2, vmdk, vhdx, vdi, ...) is read
// through qemu-nbd, using `qemu-img map` for its allocated extents. The
// format is detected with `qemu-img info`; without qemu-img a file is read
// as raw unless its first bytes name a known format.
func OpenSource(ctx context.Context, path string) (Source, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	switch {
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		return openRaw(path, true)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("image: %s is neither a regular file nor a block device (mode %v)", path, fi.Mode())
	}
	info, err := detectFormat(ctx, path)
	if err != nil {
		return nil, err
	}
	if info.Format == "raw" {
		return openRaw(path, false)
	}
	return openQemu(ctx, path, info)
}

// qemuImg is the qemu-img binary; a variable so tests can break it.
var qemuImg = "qemu-img"

// detectFormat asks qemu-img for the format of the file at path.
func detectFormat(ctx context.Context, path string) (qemuInfo, error) {
	if _, err := exec.LookPath(qemuImg); err != nil {
		if f := sniffFormat(path); f != "" {
			return qemuInfo{}, fmt.Errorf("image: %s looks like a %s image; reading it needs qemu-img and qemu-nbd (Debian: apt-get install qemu-utils)", path, f)
		}
		return qemuInfo{Format: "raw"}, nil
	}
	return qemuImgInfo(ctx, path)
}

// sniffFormat recognises the magic numbers of the common virtual disk
// formats (from each format's specification, as qemu's probes use them).
func sniffFormat(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := io.ReadFull(f, b); err != nil {
		return ""
	}
	for _, m := range []struct{ magic, name string }{
		{"QFI\xfb", "qcow2"}, // qcow2.txt: "QFI\xfb"
		{"KDMV", "vmdk"},     // VMDK sparse extent header
		{"vhdxfile", "vhdx"}, // VHDX file type identifier
		{"conectix", "vpc"},  // VHD footer cookie (copy at offset 0 in dynamic disks)
		{"<<< ", "vdi"},      // VDI text preamble
	} {
		if bytes.HasPrefix(b, []byte(m.magic)) {
			return m.name
		}
	}
	return ""
}

// rawSource reads a raw file or block device.
type rawSource struct {
	f    *os.File
	size int64
}

func openRaw(path string, device bool) (*rawSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	size, err := sourceSize(f, device)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image: size of %s: %w", path, err)
	}
	if size <= 0 {
		f.Close()
		return nil, fmt.Errorf("image: %s is empty", path)
	}
	adviseSequential(f)
	return &rawSource{f: f, size: size}, nil
}

func (s *rawSource) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err == io.EOF {
		err = fmt.Errorf("%s shrank: %w", s.f.Name(), io.ErrUnexpectedEOF)
	}
	return n, err
}

func (s *rawSource) Size() int64 { return s.size }

func (s *rawSource) Extents(ctx context.Context) ([]Extent, error) {
	return fileExtents(ctx, s.f, s.size)
}

func (s *rawSource) Close() error { return s.f.Close() }

// wholeExtent is the extent list of a source that cannot say where its
// holes are: everything may be data (all-zero chunks still become holes).
func wholeExtent(size int64) []Extent { return []Extent{{0, size}} }
