// Package tftp implements the TFTP wire format (RFC 1350), option
// negotiation (RFC 2347, 2348, 2349, 7440), a unicast server whose DATA
// windows leave in one send syscall straight from mmap'd files, and a client.
//
// The package knows nothing of multicast, DHCP or HTTP: the mtftp package
// reuses its codec and option parser, never the other way round.
package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcode is the first field of every TFTP packet (RFC 1350 §5, RFC 2347).
type Opcode uint16

// Opcodes.
const (
	OpRRQ   Opcode = 1
	OpWRQ   Opcode = 2
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6
)

func (o Opcode) String() string {
	switch o {
	case OpRRQ:
		return "RRQ"
	case OpWRQ:
		return "WRQ"
	case OpDATA:
		return "DATA"
	case OpACK:
		return "ACK"
	case OpERROR:
		return "ERROR"
	case OpOACK:
		return "OACK"
	}
	return fmt.Sprintf("op(%d)", uint16(o))
}

// ErrorCode is the code of an ERROR packet (RFC 1350 §5, RFC 2347).
type ErrorCode uint16

// Error codes.
const (
	ErrCodeUndefined    ErrorCode = 0
	ErrCodeNotFound     ErrorCode = 1
	ErrCodeAccess       ErrorCode = 2
	ErrCodeDiskFull     ErrorCode = 3
	ErrCodeIllegalOp    ErrorCode = 4
	ErrCodeUnknownTID   ErrorCode = 5
	ErrCodeFileExists   ErrorCode = 6
	ErrCodeNoSuchUser   ErrorCode = 7
	ErrCodeOptionRefuse ErrorCode = 8
)

// Sizes from the RFCs.
const (
	HeaderLen        = 4     // opcode + block number, or opcode + error code
	DefaultBlockSize = 512   // RFC 1350
	MinBlockSize     = 8     // RFC 2348
	MaxBlockSize     = 65464 // RFC 2348
	MaxRequestLen    = 512   // RFC 2347: a request with options fits in 512 octets
	MaxWindowSize    = 65535 // RFC 7440
)

// MaxOptions is how many options ParseRequest reads from one request; the
// rest are ignored (RFC 2347 lets a server omit any option). Firmware and
// tools send at most six (EDK2: blksize, tsize, windowsize, timeout;
// mtftpd's native dialect three); 32 leaves room for any client and keeps
// a crafted request from buying work per option (issue 13, finding 4).
const MaxOptions = 32

// ErrMalformed is returned (wrapped) for any packet that does not parse.
var ErrMalformed = errors.New("malformed packet")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Option is one name/value pair of a request or an OACK. Names are kept as
// the peer sent them; compare with strings.EqualFold.
type Option struct {
	Name, Value string
}

// Request is a parsed RRQ or WRQ.
type Request struct {
	Op       Opcode // OpRRQ or OpWRQ
	Filename string
	Mode     string // lower-cased: "octet", "netascii", "mail", or whatever the peer sent
	Options  []Option
}

// Opcode of a packet, or 0 when it is shorter than two bytes.
func PacketOpcode(b []byte) Opcode {
	if len(b) < 2 {
		return 0
	}
	return Opcode(binary.BigEndian.Uint16(b))
}

// ParseRequest parses an RRQ or WRQ. Filename and mode must be present and
// NUL-terminated; the options are read leniently, like tftp-hpa does
// (docs/protocols.md §11 rule 2: omit, never abort): parsing stops at an empty
// option name (trailing NUL padding) or at a field without its NUL, a name
// without a value is ignored, and of a repeated option the first counts.
//
// A request over MaxRequestLen bytes is refused before anything in it is
// read (RFC 2347 §"Packet Formats": the request packet must not exceed 512
// octets), and at most MaxOptions options are read, so the work per
// request is bounded by 512 bytes and 32 options whatever it holds.
func ParseRequest(b []byte) (*Request, error) {
	op := PacketOpcode(b)
	if op != OpRRQ && op != OpWRQ {
		return nil, malformed("not a request (opcode %d)", op)
	}
	if len(b) > MaxRequestLen {
		return nil, malformed("request of %d bytes (RFC 2347 limit %d)", len(b), MaxRequestLen)
	}
	rest := b[2:]
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return "", false
		}
		f := string(rest[:i])
		rest = rest[i+1:]
		return f, true
	}
	filename, ok := next()
	if !ok {
		return nil, malformed("filename not NUL-terminated")
	}
	if filename == "" {
		return nil, malformed("empty filename")
	}
	mode, ok := next()
	if !ok {
		return nil, malformed("mode not NUL-terminated")
	}
	// ASCII folding keeps the length: a mode with invalid UTF-8 must not
	// grow past 512 bytes when lower-cased (found by FuzzParseRequest).
	r := &Request{Op: op, Filename: filename, Mode: asciiLower(mode)}
	// Repeats are found through a small hash table of the names kept
	// (ASCII case folded, as option names are): one probe per option in
	// the common case, not a comparison with every earlier option, and
	// no allocation. 64 slots for at most 32 names: half full at most,
	// and even names crafted to collide cost at most MaxOptions probes.
	var seen [2 * MaxOptions]uint8 // index+1 into r.Options; 0 = empty
	for range MaxOptions {
		name, ok := next()
		if !ok || name == "" {
			break
		}
		value, ok := next()
		if !ok {
			break
		}
		i := foldHash(name) % uint32(len(seen))
		for seen[i] != 0 && !asciiEqualFold(r.Options[seen[i]-1].Name, name) {
			i = (i + 1) % uint32(len(seen))
		}
		if seen[i] != 0 {
			continue // a repeat: the first counts
		}
		r.Options = append(r.Options, Option{Name: name, Value: value})
		seen[i] = uint8(len(r.Options))
	}
	return r, nil
}

// foldHash is FNV-1a over s with A-Z folded to a-z.
func foldHash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(asciiFold(s[i]))) * 16777619
	}
	return h
}

// asciiLower folds A-Z only; it returns s itself when nothing changes.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = asciiFold(b[j])
			}
			return string(b)
		}
	}
	return s
}

func asciiFold(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// asciiEqualFold compares option names with A-Z folded (names are ASCII,
// RFC 2347).
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if asciiFold(a[i]) != asciiFold(b[i]) {
			return false
		}
	}
	return true
}

// splitNUL splits NUL-terminated strings; the input must end with a NUL.
func splitNUL(b []byte) ([]string, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return nil, malformed("string not NUL-terminated")
	}
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out, nil
}

// Option returns the value of the named option and whether it was present.
func (r *Request) Option(name string) (string, bool) {
	for _, o := range r.Options {
		if strings.EqualFold(o.Name, name) {
			return o.Value, true
		}
	}
	return "", false
}

// Marshal appends the wire form of r to dst.
func (r *Request) Marshal(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(r.Op))
	dst = appendNUL(dst, r.Filename)
	dst = appendNUL(dst, r.Mode)
	for _, o := range r.Options {
		dst = appendNUL(dst, o.Name)
		dst = appendNUL(dst, o.Value)
	}
	return dst
}

func appendNUL(dst []byte, s string) []byte {
	dst = append(dst, s...)
	return append(dst, 0)
}

// ParseOACK parses an OACK (RFC 2347). An OACK must carry at least one option.
func ParseOACK(b []byte) ([]Option, error) {
	if PacketOpcode(b) != OpOACK {
		return nil, malformed("not an OACK")
	}
	fields, err := splitNUL(b[2:])
	if err != nil {
		return nil, err
	}
	if len(fields) == 0 || len(fields)%2 != 0 {
		return nil, malformed("OACK with %d fields", len(fields))
	}
	opts := make([]Option, 0, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		if fields[i] == "" {
			return nil, malformed("empty option name")
		}
		opts = append(opts, Option{Name: fields[i], Value: fields[i+1]})
	}
	return opts, nil
}

// AppendOACK appends an OACK carrying opts to dst.
func AppendOACK(dst []byte, opts []Option) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(OpOACK))
	for _, o := range opts {
		dst = appendNUL(dst, o.Name)
		dst = appendNUL(dst, o.Value)
	}
	return dst
}

// PutDataHeader writes a DATA header for the 16-bit wire block number into
// h, which must be at least HeaderLen long.
func PutDataHeader(h []byte, block uint16) {
	binary.BigEndian.PutUint16(h, uint16(OpDATA))
	binary.BigEndian.PutUint16(h[2:], block)
}

// ParseData returns the block number and payload of a DATA packet. The
// payload aliases b.
func ParseData(b []byte) (block uint16, payload []byte, err error) {
	if len(b) < HeaderLen || PacketOpcode(b) != OpDATA {
		return 0, nil, malformed("not a DATA packet")
	}
	return binary.BigEndian.Uint16(b[2:]), b[HeaderLen:], nil
}

// AppendAck appends an ACK for the wire block number to dst.
func AppendAck(dst []byte, block uint16) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(OpACK))
	return binary.BigEndian.AppendUint16(dst, block)
}

// ParseAck returns the block number of an ACK. Trailing bytes are refused.
func ParseAck(b []byte) (uint16, error) {
	if len(b) != HeaderLen || PacketOpcode(b) != OpACK {
		return 0, malformed("not a 4-byte ACK")
	}
	return binary.BigEndian.Uint16(b[2:]), nil
}

// AppendError appends an ERROR packet to dst. The message is cut to keep
// the packet within 512 bytes and stripped of NUL bytes.
func AppendError(dst []byte, code ErrorCode, msg string) []byte {
	msg = strings.ReplaceAll(msg, "\x00", "")
	if len(msg) > MaxRequestLen-HeaderLen-1 {
		msg = msg[:MaxRequestLen-HeaderLen-1]
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(OpERROR))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return appendNUL(dst, msg)
}

// ParseError returns the code and message of an ERROR packet. A missing
// terminating NUL is tolerated (some clients omit it).
func ParseError(b []byte) (ErrorCode, string, error) {
	if len(b) < HeaderLen || PacketOpcode(b) != OpERROR {
		return 0, "", malformed("not an ERROR packet")
	}
	msg := b[HeaderLen:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	return ErrorCode(binary.BigEndian.Uint16(b[2:])), string(msg), nil
}

// RemoteError is an ERROR packet received from the peer.
type RemoteError struct {
	Code    ErrorCode
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("tftp error %d (%s)", e.Code, e.Code)
	}
	return fmt.Sprintf("tftp error %d (%s): %s", e.Code, e.Code, e.Message)
}

func (c ErrorCode) String() string {
	switch c {
	case ErrCodeUndefined:
		return "not defined"
	case ErrCodeNotFound:
		return "file not found"
	case ErrCodeAccess:
		return "access violation"
	case ErrCodeDiskFull:
		return "disk full"
	case ErrCodeIllegalOp:
		return "illegal operation"
	case ErrCodeUnknownTID:
		return "unknown transfer ID"
	case ErrCodeFileExists:
		return "file exists"
	case ErrCodeNoSuchUser:
		return "no such user"
	case ErrCodeOptionRefuse:
		return "option negotiation refused"
	}
	return fmt.Sprintf("code %d", uint16(c))
}
