package filestore

import (
	"bytes"
	"io"
)

// Netascii (RFC 1350 §5, line rules from RFC 764): a Unix sender turns every
// LF into CR LF and every CR into CR NUL. Each LF and each CR therefore adds
// exactly one byte, which is what makes the converted size a simple count.
// A CR LF already in the file becomes CR NUL CR LF, as tftp-hpa does.

// NetasciiLen returns len(src) after netascii conversion (the tsize of a
// netascii transfer of src).
func NetasciiLen(src []byte) int64 {
	return int64(len(src)) + int64(bytes.Count(src, []byte{'\n'})) + int64(bytes.Count(src, []byte{'\r'}))
}

// NetasciiReader converts a byte slice to netascii while it is read, without
// allocating and without converting the whole file up front.
//
// A CR LF or CR NUL pair may be split across two Read calls (a DATA block
// boundary can fall between the two bytes); the second byte is carried over.
// The zero value reads nothing. A NetasciiReader is not safe for concurrent
// use; each transfer owns its own.
//
// The reader does not protect itself against a mapping truncated on disk:
// the caller (the sending goroutine) must run it under ReadMapped or
// CatchFault, as it does for octet blocks.
type NetasciiReader struct {
	src     []byte
	pos     int  // next unread byte of src
	pending byte // second byte of a pair that did not fit
	hasPend bool
}

// Reset makes r read the netascii form of src from the start. r keeps a
// reference to src until the next Reset.
func (r *NetasciiReader) Reset(src []byte) {
	*r = NetasciiReader{src: src}
}

// Read fills p with the next converted bytes. It fills p completely unless
// the end of the converted data is reached; it returns io.EOF together with
// the last bytes (n may be len(p) or less, including 0) once nothing is left,
// and (0, io.EOF) on every later call.
func (r *NetasciiReader) Read(p []byte) (int, error) {
	n := 0
	if r.hasPend && len(p) > 0 {
		p[0] = r.pending
		r.hasPend = false
		n = 1
	}
	for n < len(p) && r.pos < len(r.src) {
		c := r.src[r.pos]
		r.pos++
		var second byte
		switch c {
		case '\n':
			second = '\n'
		case '\r':
			second = 0
		default:
			p[n] = c
			n++
			continue
		}
		p[n] = '\r'
		n++
		if n < len(p) {
			p[n] = second
			n++
		} else {
			r.pending, r.hasPend = second, true
		}
	}
	if !r.hasPend && r.pos >= len(r.src) {
		return n, io.EOF
	}
	return n, nil
}
