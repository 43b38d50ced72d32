package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A minimal NBD client: fixed newstyle handshake, NBD_OPT_GO, then
// NBD_CMD_READ with simple replies and NBD_CMD_DISC. It exists to read
// disk formats through qemu-nbd without a temporary raw copy. Constants and
// layouts are those of the NBD protocol (docs/image-format.md, "Reading
// other formats: the NBD client").
// The server's bytes are untrusted: every length is bounded before use.
const (
	nbdMagic            = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic         = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic         = 0x3e889045565a9    // option reply magic
	nbdRequestMagic     = 0x25609513
	nbdSimpleReplyMagic = 0x67446698

	nbdFlagFixedNewstyle = 1 << 0 // handshake flag, and NBD_FLAG_C_FIXED_NEWSTYLE
	nbdFlagNoZeroes      = 1 << 1 // handshake flag, and NBD_FLAG_C_NO_ZEROES

	nbdOptGo         = 7
	nbdRepAck        = 1
	nbdRepInfo       = 3
	nbdRepErrBit     = 1 << 31
	nbdInfoExport    = 0
	nbdInfoBlockSize = 3

	nbdCmdRead = 0
	nbdCmdDisc = 2

	// nbdMaxOptReply bounds one option reply's payload: the longest the
	// protocol defines is a 4096-byte string plus a few fields.
	nbdMaxOptReply = 8 << 10
	// nbdMaxReplies bounds the replies to one NBD_OPT_GO.
	nbdMaxReplies = 64
	// nbdMaxRequest is the largest read we ask for: the protocol's default
	// maximum payload is 32 MiB; 4 MiB keeps a request well inside any
	// server's limit and costs nothing on a local socket.
	nbdMaxRequest = 4 << 20
)

var errNBD = errors.New("nbd")

func nbdErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errNBD}, args...)...)
}

type nbdClient struct {
	r      *bufio.Reader
	w      io.Writer
	size   uint64
	maxReq uint32
	handle uint64
	hdr    [28]byte
}

// nbdHandshake negotiates the default export ("") on a fresh connection
// and returns a client in the transmission phase.
func nbdHandshake(rw io.ReadWriter) (*nbdClient, error) {
	c := &nbdClient{r: bufio.NewReaderSize(rw, 64<<10), w: rw, maxReq: nbdMaxRequest}
	var b [18]byte
	if _, err := io.ReadFull(c.r, b[:18]); err != nil {
		return nil, nbdErrorf("reading the server greeting: %w", err)
	}
	be := binary.BigEndian
	if be.Uint64(b[0:]) != nbdMagic || be.Uint64(b[8:]) != nbdOptMagic {
		return nil, nbdErrorf("server greeting %x is not fixed newstyle NBDMAGIC IHAVEOPT", b[:16])
	}
	hflags := be.Uint16(b[16:])
	if hflags&nbdFlagFixedNewstyle == 0 {
		return nil, nbdErrorf("server does not offer fixed newstyle negotiation (flags %#x)", hflags)
	}
	cflags := uint32(nbdFlagFixedNewstyle) | uint32(hflags&nbdFlagNoZeroes)
	// NBD_OPT_GO for the default export, asking for block size limits.
	req := be.AppendUint32(nil, cflags)
	req = be.AppendUint64(req, nbdOptMagic)
	req = be.AppendUint32(req, nbdOptGo)
	req = be.AppendUint32(req, 4+2+2) // name length, info count, one info request
	req = be.AppendUint32(req, 0)     // export name "": the default export
	req = be.AppendUint16(req, 1)
	req = be.AppendUint16(req, nbdInfoBlockSize)
	if _, err := c.w.Write(req); err != nil {
		return nil, nbdErrorf("sending NBD_OPT_GO: %w", err)
	}
	haveExport := false
	payload := make([]byte, nbdMaxOptReply)
	for range nbdMaxReplies {
		var rh [20]byte
		if _, err := io.ReadFull(c.r, rh[:]); err != nil {
			return nil, nbdErrorf("reading an option reply: %w", err)
		}
		if m := be.Uint64(rh[0:]); m != nbdRepMagic {
			return nil, nbdErrorf("option reply magic %#x, want %#x", m, nbdRepMagic)
		}
		if opt := be.Uint32(rh[8:]); opt != nbdOptGo {
			return nil, nbdErrorf("reply to option %d, we sent NBD_OPT_GO (%d)", opt, nbdOptGo)
		}
		typ, n := be.Uint32(rh[12:]), be.Uint32(rh[16:])
		if n > nbdMaxOptReply {
			return nil, nbdErrorf("option reply of %d bytes (at most %d)", n, nbdMaxOptReply)
		}
		p := payload[:n]
		if _, err := io.ReadFull(c.r, p); err != nil {
			return nil, nbdErrorf("reading a %d-byte option reply: %w", n, err)
		}
		switch {
		case typ == nbdRepAck:
			if !haveExport {
				return nil, nbdErrorf("server accepted NBD_OPT_GO without NBD_INFO_EXPORT")
			}
			return c, nil
		case typ&nbdRepErrBit != 0:
			return nil, nbdErrorf("server refused NBD_OPT_GO: error %#x %q", typ, printable(p))
		case typ == nbdRepInfo:
			if len(p) < 2 {
				return nil, nbdErrorf("NBD_REP_INFO of %d bytes", len(p))
			}
			switch be.Uint16(p) {
			case nbdInfoExport:
				if len(p) != 12 {
					return nil, nbdErrorf("NBD_INFO_EXPORT of %d bytes (want 12)", len(p))
				}
				c.size = be.Uint64(p[2:])
				if c.size > maxFileSize {
					return nil, nbdErrorf("export size %d", c.size)
				}
				haveExport = true
			case nbdInfoBlockSize:
				if len(p) != 14 {
					return nil, nbdErrorf("NBD_INFO_BLOCK_SIZE of %d bytes (want 14)", len(p))
				}
				if max := be.Uint32(p[10:]); max > 0 && max < c.maxReq {
					c.maxReq = max
				}
			}
			// Other information types are ignored, as the protocol says.
		default:
			return nil, nbdErrorf("unexpected option reply type %d", typ)
		}
	}
	return nil, nbdErrorf("more than %d replies to NBD_OPT_GO", nbdMaxReplies)
}

// printable keeps a server's error message short and safe to print.
func printable(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// ReadAt reads len(p) bytes at off with NBD_CMD_READ, one request at a
// time. Not safe for concurrent use.
func (c *nbdClient) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || uint64(off)+uint64(len(p)) > c.size {
		return 0, nbdErrorf("read of %d bytes at %d beyond the export size %d", len(p), off, c.size)
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, int(c.maxReq))
		if err := c.read(p[done:done+n], uint64(off)+uint64(done)); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

func (c *nbdClient) request(typ uint16, off uint64, n uint32) error {
	be := binary.BigEndian
	c.handle++
	b := c.hdr[:0]
	b = be.AppendUint32(b, nbdRequestMagic)
	b = be.AppendUint16(b, 0) // command flags
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, c.handle)
	b = be.AppendUint64(b, off)
	b = be.AppendUint32(b, n)
	_, err := c.w.Write(b)
	return err
}

func (c *nbdClient) read(p []byte, off uint64) error {
	if err := c.request(nbdCmdRead, off, uint32(len(p))); err != nil {
		return nbdErrorf("sending a read of %d bytes at %d: %w", len(p), off, err)
	}
	return c.readReply(p, off)
}

// readReply reads the simple reply to the read just sent: 16 bytes of
// header and, on success, exactly len(p) bytes of data (a simple reply
// carries no length: the request's length is the only one there is).
func (c *nbdClient) readReply(p []byte, off uint64) error {
	var rh [16]byte
	if _, err := io.ReadFull(c.r, rh[:]); err != nil {
		return nbdErrorf("reading the reply to a read at %d: %w", off, err)
	}
	be := binary.BigEndian
	if m := be.Uint32(rh[0:]); m != nbdSimpleReplyMagic {
		return nbdErrorf("reply magic %#x at read offset %d (want the simple reply magic %#x)", m, off, nbdSimpleReplyMagic)
	}
	if h := be.Uint64(rh[8:]); h != c.handle {
		return nbdErrorf("reply handle %d, the request's was %d", h, c.handle)
	}
	if e := be.Uint32(rh[4:]); e != 0 {
		return nbdErrorf("server error %d reading %d bytes at %d", e, len(p), off)
	}
	if _, err := io.ReadFull(c.r, p); err != nil {
		return nbdErrorf("reading %d bytes at %d: %w", len(p), off, err)
	}
	return nil
}

// disconnect sends NBD_CMD_DISC; the server then closes the connection.
func (c *nbdClient) disconnect() error {
	return c.request(nbdCmdDisc, 0, 0)
}
