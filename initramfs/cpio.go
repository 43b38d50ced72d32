package initramfs

import (
	"fmt"
	"io"
)

// newcWriter writes the "new ASCII" (newc, magic 070701) cpio format the
// kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/
// buffer-format.rst in the kernel tree): a 110-byte header of thirteen
// 8-digit hex fields, the NUL-terminated name padded to a multiple of 4,
// the data padded to a multiple of 4, and a last entry "TRAILER!!!".
//
// It is written here rather than taken from github.com/cavaliergopher/cpio
// because that writer leaves rdevmajor/rdevminor zero, and /dev/console
// must be the character device 5:1.
type newcWriter struct {
	w     io.Writer
	ino   uint32
	err   error
	mtime uint32
}

// entry is one cpio member.
type entry struct {
	name       string // without a leading slash
	mode       uint32 // type and permission bits (S_IFREG|0755, ...)
	rmaj, rmin uint32 // device number of a device node
	data       []byte // contents of a regular file or symlink target
	size       int64  // with r: the size of the file r reads
	r          io.Reader
	nlink      uint32
}

// Mode bits of the cpio header (the same values as stat's S_IF*).
const (
	modeDir  = 0o040000
	modeChar = 0o020000
	modeReg  = 0o100000
	modeLink = 0o120000
)

func (c *newcWriter) write(e entry) error {
	if c.err != nil {
		return c.err
	}
	size := int64(len(e.data))
	if e.r != nil {
		size = e.size
	}
	if size > 0xffffffff {
		return fmt.Errorf("initramfs: %s is %d bytes; newc sizes are 32-bit", e.name, size)
	}
	nlink := e.nlink
	if nlink == 0 {
		nlink = 1
		if e.mode&0o170000 == modeDir {
			nlink = 2
		}
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, e.mode, 0, 0, nlink, c.mtime, uint32(size),
		0, 0, e.rmaj, e.rmin, len(e.name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(e.name)+4)
	buf = append(buf, hdr...)
	buf = append(buf, e.name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, c.err = c.w.Write(buf); c.err != nil {
		return c.err
	}
	if e.r != nil {
		var n int64
		n, c.err = io.Copy(c.w, io.LimitReader(e.r, size))
		if c.err == nil && n != size {
			c.err = fmt.Errorf("initramfs: %s: read %d bytes, expected %d (the file changed?)", e.name, n, size)
		}
	} else {
		_, c.err = c.w.Write(e.data)
	}
	if c.err != nil {
		return c.err
	}
	_, c.err = c.w.Write(make([]byte, pad4(int(size%4))))
	return c.err
}

// close writes the trailer.
func (c *newcWriter) close() error {
	c.ino = 0
	return c.write(entry{name: "TRAILER!!!", nlink: 1})
}

func pad4(n int) int { return (4 - n%4) % 4 }
