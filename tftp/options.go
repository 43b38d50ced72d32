package tftp

import (
	"strconv"
	"strings"
	"time"
)

// Option names.
const (
	OptBlockSize  = "blksize"    // RFC 2348
	OptTimeout    = "timeout"    // RFC 2349, seconds 1..255
	OptTransferSz = "tsize"      // RFC 2349
	OptWindowSize = "windowsize" // RFC 7440
	OptRollover   = "rollover"   // tftp-hpa: block number after 65535 (0 or 1)
	OptUTimeout   = "utimeout"   // tftp-hpa: microseconds 10000..255000000
)

// Limits are the server's side of option negotiation.
type Limits struct {
	// MaxBlockSize caps blksize (config cap, already lowered to the
	// egress MTU − 32 by the caller where known).
	MaxBlockSize int
	// MaxWindow caps windowsize (RFC 7440 lets the server lower it).
	MaxWindow int
	// MaxWindowBytes caps windowsize × blksize, so a 65464-byte block
	// size cannot ask for 4 GB in flight.
	MaxWindowBytes int
	// Netascii: windowsize is refused (omitted) in netascii, where the
	// wire offset of a block is not a linear function of the file offset
	// (docs/protocols.md §1.3).
	Netascii bool
}

// Negotiated is the outcome of option negotiation: the parameters the
// transfer runs with and the OACK to send (empty: no OACK, plain RFC 1350).
type Negotiated struct {
	BlockSize  int
	WindowSize int
	// Timeout is the client's requested retransmission interval
	// (timeout/utimeout), 0 when none was acknowledged.
	Timeout time.Duration
	// Rollover is the block number that follows 65535: 0 (default, what
	// iPXE, EDK2 and PXELINUX expect) or 1 when the client asked for it.
	Rollover uint16
	// TSizeAsked: the client sent tsize (RRQ: a size query, answered).
	TSizeAsked bool
	// TSize is the client's announced size for a WRQ (-1 if none).
	TSize int64
	// Ack lists the acknowledged options in the client's order.
	Ack []Option
}

// Negotiate applies RFC 2347 rules to a request: only options the client
// sent and the server accepts are acknowledged; unknown or unusable ones are
// omitted, never fatal (docs/protocols.md §2, §11 rule 2). size is the value to
// answer a tsize query with (the file size, or its netascii length); a
// negative size omits tsize.
func Negotiate(req *Request, lim Limits, size int64) Negotiated {
	n := Negotiated{BlockSize: DefaultBlockSize, WindowSize: 1, TSize: -1}
	maxBlk := lim.MaxBlockSize
	if maxBlk <= 0 || maxBlk > MaxBlockSize {
		maxBlk = MaxBlockSize
	}
	for _, o := range req.Options {
		name := strings.ToLower(o.Name)
		switch name {
		case OptBlockSize:
			v, ok := parseUint(o.Value, MinBlockSize, MaxBlockSize)
			if !ok {
				continue
			}
			// The server may lower blksize, never raise it (RFC 2348),
			// and never below the RFC's minimum.
			v = max(min(v, maxBlk), MinBlockSize)
			n.BlockSize = v
			n.Ack = append(n.Ack, Option{o.Name, strconv.Itoa(v)})
		case OptTimeout:
			// Must be echoed exactly or omitted (RFC 2349).
			v, ok := parseUint(o.Value, 1, 255)
			if !ok {
				continue
			}
			n.Timeout = time.Duration(v) * time.Second
			n.Ack = append(n.Ack, Option{o.Name, strconv.Itoa(v)})
		case OptUTimeout:
			v, ok := parseUint(o.Value, 10000, 255000000)
			if !ok {
				continue
			}
			n.Timeout = time.Duration(v) * time.Microsecond
			n.Ack = append(n.Ack, Option{o.Name, strconv.Itoa(v)})
		case OptTransferSz:
			v, err := strconv.ParseInt(o.Value, 10, 64)
			if err != nil || v < 0 {
				continue
			}
			if req.Op == OpWRQ {
				n.TSize = v
				n.Ack = append(n.Ack, Option{o.Name, o.Value})
				continue
			}
			if size < 0 {
				continue
			}
			n.TSizeAsked = true
			n.Ack = append(n.Ack, Option{o.Name, strconv.FormatInt(size, 10)})
		case OptWindowSize:
			if lim.Netascii {
				continue
			}
			v, ok := parseUint(o.Value, 1, MaxWindowSize)
			if !ok {
				continue
			}
			if lim.MaxWindow > 0 {
				v = min(v, lim.MaxWindow)
			}
			n.WindowSize = v
			n.Ack = append(n.Ack, Option{o.Name, strconv.Itoa(v)})
		case OptRollover:
			if o.Value != "0" && o.Value != "1" {
				continue
			}
			if o.Value == "1" {
				n.Rollover = 1
			}
			n.Ack = append(n.Ack, Option{o.Name, o.Value})
		}
	}
	// With rollover 1 the wire numbers cycle every 65535 blocks, so a
	// window must stay below that for ACKs to map to one block.
	if n.Rollover == 1 && n.WindowSize > MaxWindowSize-1 {
		n.WindowSize = MaxWindowSize - 1
		for i := range n.Ack {
			if strings.EqualFold(n.Ack[i].Name, OptWindowSize) {
				n.Ack[i].Value = strconv.Itoa(n.WindowSize)
			}
		}
	}
	// Bytes in flight: lower the window (and its OACK value) so one window
	// stays within MaxWindowBytes. blksize is decided first above.
	if lim.MaxWindowBytes > 0 && n.WindowSize*n.BlockSize > lim.MaxWindowBytes {
		w := max(lim.MaxWindowBytes/n.BlockSize, 1)
		n.WindowSize = w
		for i := range n.Ack {
			if strings.EqualFold(n.Ack[i].Name, OptWindowSize) {
				n.Ack[i].Value = strconv.Itoa(w)
			}
		}
	}
	return n
}

// parseUint parses a decimal option value within [lo, hi].
func parseUint(s string, lo, hi int) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, false
	}
	return v, true
}

// wireBlock maps a 64-bit block counter to its 16-bit wire number
// (docs/protocols.md §4): modulo 65536 with rollover 0; with rollover 1 the
// numbers after 65535 cycle through 1..65535.
func wireBlock(n uint64, rollover uint16) uint16 {
	if rollover == 0 || n == 0 {
		return uint16(n)
	}
	return uint16((n-1)%65535 + 1)
}

// unwrapBlock maps a 16-bit wire block number to the unique 64-bit block in
// [lo, hi] whose wire number it is. It is unique because a window never
// spans more than 65535 blocks. ok is false when no block in range matches.
func unwrapBlock(wire uint16, lo, hi uint64, rollover uint16) (uint64, bool) {
	if hi < lo {
		return 0, false
	}
	if rollover == 0 {
		n := lo + uint64(wire-uint16(lo))
		return n, n <= hi
	}
	if lo == 0 {
		if wire == 0 {
			return 0, true
		}
		lo = 1
		if hi < lo {
			return 0, false
		}
	}
	if wire == 0 {
		return 0, false
	}
	d := (int(wire) - int(wireBlock(lo, 1)) + 65535) % 65535
	n := lo + uint64(d)
	return n, n <= hi
}
