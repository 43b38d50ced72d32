package mtftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The native dialect's packets (docs/native-multicast.md). A receiver asks
// for a file with an ordinary RRQ carrying the options `multicast` and
// OptNative; a server that speaks the dialect answers from a session socket
// with a SESSION packet, anything else (OACK, DATA, ERROR) means it does
// not and the receiver falls back to unicast. Opcodes start at 0x4d00 so
// no TFTP opcode (1..6) is ever mistaken for one.
const (
	// OptNative is the RRQ option that asks for the native dialect; its
	// value is the protocol version.
	OptNative = "x-mtftpd"
	// NativeVersion is the dialect version this code speaks (2: address
	// proof by cookie, receiver tokens in STATUS, WANT and DONE).
	NativeVersion = "2"
	// OptCookie in the RRQ echoes the server's CHALLENGE: the receiver
	// proves it reads packets sent to its address before any session
	// state exists for it (docs/native-multicast.md, "Joining").
	OptCookie = "x-cookie"

	opNativeSession   uint16 = 0x4d53 // "MS" server → group or receiver: session parameters and state
	opNativeData      uint16 = 0x4d44 // "MD" server → group: data shard of the carousel
	opNativeRepair    uint16 = 0x4d52 // "MR" server → group: repair shard (parity, or data again)
	opNativeStatus    uint16 = 0x4d4e // "MN" receiver → server: loss, rate and NAKs
	opNativeDone      uint16 = 0x4d46 // "MF" receiver → server: finished (verified or failed)
	opNativeDoneAck   uint16 = 0x4d4b // "MK" server → receiver: the DONE was counted
	opNativeWant      uint16 = 0x4d57 // "MW" receiver → server: the stripes it needs (partial download)
	opNativeWantAck   uint16 = 0x4d41 // "MA" server → receiver: a WANT was taken, and from which position
	opNativeChallenge uint16 = 0x4d43 // "MC" server → receiver: echo this cookie in the RRQ (x-cookie)
)

// tokenLen is the length of a cookie, which is also the receiver's token
// in its STATUS, WANT and DONE packets.
const tokenLen = 16

// token proves a packet comes from the receiver that joined: the cookie
// the server sent to its address (it travels only by unicast between the
// two, never on the group).
type token [tokenLen]byte

// OptWant in the RRQ says the receiver needs only part of the file: it
// sends WANT packets naming its stripes after the SESSION answer, and the
// stream carries only stripes some receiver wants (docs/native-multicast.md,
// "Partial downloads").
const OptWant = "x-want"

// Header sizes. A data or repair datagram is dataHdrLen bytes of header and
// one shard; the session's shard size is the negotiated TFTP blksize − 8,
// so its datagrams are exactly as long as TFTP's for the same blksize.
const (
	dataHdrLen      = 16
	nativeBlkAdjust = dataHdrLen - 4
	sessionFixedLen = 2 + 4 + 1 + 4 + 2 + 8 + 2 + 2 + 2 + 2 + 8 + 2 + 4 + 4 + 32
	statusFixedLen  = 2 + 4 + tokenLen + 4 + 4 + 4 + 4 + 4 + 2
	nakLen          = 4 + 2 + 8
	wantFixedLen    = 2 + 4 + tokenLen + 4 + 4
	wantAckLen      = 2 + 4 + 4 + 4 + 8
	// maxWantBits: stripes one WANT packet names (its bitmap is 1 KiB, so
	// the packet fits any MTU).
	maxWantBits = 8192
	// maxStatusNaks caps one status packet's NAK list so it fits a
	// 1500-byte MTU with room to spare.
	maxStatusNaks = 96
	// maxStripeData: a NAK's bitmap names the missing data shards of a
	// stripe, so K is at most 64.
	maxStripeData = 64
)

// Session flags.
const (
	flagIdle   = 1 << iota // the carousel has stopped: only repairs are sent now
	flagMove               // unicast to one receiver: leave your session for this one
	flagSHA                // SHA256 holds the file's digest
	flagClosed             // the session ended (shutdown or error); receivers give up
)

// sessionPkt describes a session: where its stream goes, the file's
// geometry and the stream's state.
type sessionPkt struct {
	ID          uint32
	Flags       uint8
	Group       netip.AddrPort
	Size        uint64
	ShardSize   uint16
	K, M        uint16 // data and parity shards per stripe
	Interleave  uint16 // stripes per interleave group of the carousel
	Seq         uint64 // start of the carousel's current interleave group (stripes since the session began)
	NakInterval uint16 // ms between a receiver's status packets
	Receivers   uint32
	RateKBps    uint32
	SHA256      [32]byte
	Name        string
}

func appendSession(b []byte, p *sessionPkt) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeSession)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = append(b, p.Flags)
	g := p.Group.Addr().As4()
	b = append(b, g[:]...)
	b = binary.BigEndian.AppendUint16(b, p.Group.Port())
	b = binary.BigEndian.AppendUint64(b, p.Size)
	b = binary.BigEndian.AppendUint16(b, p.ShardSize)
	b = binary.BigEndian.AppendUint16(b, p.K)
	b = binary.BigEndian.AppendUint16(b, p.M)
	b = binary.BigEndian.AppendUint16(b, p.Interleave)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint16(b, p.NakInterval)
	b = binary.BigEndian.AppendUint32(b, p.Receivers)
	b = binary.BigEndian.AppendUint32(b, p.RateKBps)
	b = append(b, p.SHA256[:]...)
	return append(b, p.Name...)
}

var errShort = errors.New("mtftp: short native packet")

func parseSession(b []byte) (sessionPkt, error) {
	var p sessionPkt
	if len(b) < sessionFixedLen || binary.BigEndian.Uint16(b) != opNativeSession {
		return p, errShort
	}
	p.ID = binary.BigEndian.Uint32(b[2:])
	p.Flags = b[6]
	p.Group = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[7:11])), binary.BigEndian.Uint16(b[11:]))
	p.Size = binary.BigEndian.Uint64(b[13:])
	p.ShardSize = binary.BigEndian.Uint16(b[21:])
	p.K = binary.BigEndian.Uint16(b[23:])
	p.M = binary.BigEndian.Uint16(b[25:])
	p.Interleave = binary.BigEndian.Uint16(b[27:])
	p.Seq = binary.BigEndian.Uint64(b[29:])
	p.NakInterval = binary.BigEndian.Uint16(b[37:])
	p.Receivers = binary.BigEndian.Uint32(b[39:])
	p.RateKBps = binary.BigEndian.Uint32(b[43:])
	copy(p.SHA256[:], b[47:79])
	p.Name = string(b[79:])
	if err := p.check(); err != nil {
		return p, err
	}
	return p, nil
}

// check rejects geometry a receiver cannot work with.
func (p *sessionPkt) check() error {
	switch {
	case p.ShardSize < 8:
		return fmt.Errorf("mtftp: session shard size %d", p.ShardSize)
	case p.Interleave < 1:
		return fmt.Errorf("mtftp: session interleave %d", p.Interleave)
	case p.K < 1 || p.K > maxStripeData || p.M < 1 || int(p.K)+int(p.M) > 256:
		return fmt.Errorf("mtftp: session stripe %d+%d", p.K, p.M)
	case !allowedScope.Contains(p.Group.Addr()) || p.Group.Port() == 0:
		return fmt.Errorf("mtftp: session group %v outside %v", p.Group, allowedScope)
	case p.Size > 1<<50:
		return fmt.Errorf("mtftp: session size %d", p.Size)
	}
	return nil
}

// dataHdr heads a data or repair shard. Seq counts the session's
// datagrams (receivers measure loss from its gaps). For DATA, Pos is the
// carousel position (stripe = Pos mod stripes); for REPAIR, Pos is the
// stripe. Shard < K is a data block of the stripe, K.. a parity shard.
type dataHdr struct {
	Op    uint16
	ID    uint32
	Seq   uint32
	Pos   uint32
	Shard uint16
}

func putDataHdr(b []byte, h dataHdr) {
	binary.BigEndian.PutUint16(b, h.Op)
	binary.BigEndian.PutUint32(b[2:], h.ID)
	binary.BigEndian.PutUint32(b[6:], h.Seq)
	binary.BigEndian.PutUint32(b[10:], h.Pos)
	binary.BigEndian.PutUint16(b[14:], h.Shard)
}

func parseDataHdr(b []byte) (dataHdr, []byte, bool) {
	if len(b) < dataHdrLen {
		return dataHdr{}, nil, false
	}
	h := dataHdr{binary.BigEndian.Uint16(b), binary.BigEndian.Uint32(b[2:]), binary.BigEndian.Uint32(b[6:]),
		binary.BigEndian.Uint32(b[10:]), binary.BigEndian.Uint16(b[14:])}
	if h.Op != opNativeData && h.Op != opNativeRepair {
		return dataHdr{}, nil, false
	}
	return h, b[dataHdrLen:], true
}

// nak asks for Missing more shards of Stripe (any K of a stripe's data
// and parity shards rebuild it); Lacks has bit i set when data shard i is
// missing, for when the stripe's parity is spent.
type nak struct {
	Stripe  uint32
	Missing uint16
	Lacks   uint64
}

// statusPkt is a receiver's periodic report: how much of the stream it
// lost and how fast it takes data (the server's rate control and
// slow-receiver split read these), how far it is, and its NAKs.
type statusPkt struct {
	ID        uint32
	Token     token
	Seen      uint32 // datagrams of the session received since the last report (repeats too)
	Lost      uint32 // datagrams missed since the last report (gaps in their numbers)
	GoodKBps  uint32 // new data taken since the last report
	Complete  uint32 // stripes complete
	FirstSeq  uint32 // the first carousel position it saw (its join)
	Naks      []nak
	nakBuffer [maxStatusNaks]nak
}

func appendStatus(b []byte, p *statusPkt) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeStatus)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = append(b, p.Token[:]...)
	b = binary.BigEndian.AppendUint32(b, p.Seen)
	b = binary.BigEndian.AppendUint32(b, p.Lost)
	b = binary.BigEndian.AppendUint32(b, p.GoodKBps)
	b = binary.BigEndian.AppendUint32(b, p.Complete)
	b = binary.BigEndian.AppendUint32(b, p.FirstSeq)
	n := min(len(p.Naks), maxStatusNaks)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	for _, k := range p.Naks[:n] {
		b = binary.BigEndian.AppendUint32(b, k.Stripe)
		b = binary.BigEndian.AppendUint16(b, k.Missing)
		b = binary.BigEndian.AppendUint64(b, k.Lacks)
	}
	return b
}

// parseStatus fills p from b; p.Naks aliases p's own buffer, so parsing
// allocates nothing.
func parseStatus(b []byte, p *statusPkt) error {
	if len(b) < statusFixedLen || binary.BigEndian.Uint16(b) != opNativeStatus {
		return errShort
	}
	p.ID = binary.BigEndian.Uint32(b[2:])
	p.Token = token(b[6 : 6+tokenLen])
	b2 := b[6+tokenLen:]
	p.Seen = binary.BigEndian.Uint32(b2)
	p.Lost = binary.BigEndian.Uint32(b2[4:])
	p.GoodKBps = binary.BigEndian.Uint32(b2[8:])
	p.Complete = binary.BigEndian.Uint32(b2[12:])
	p.FirstSeq = binary.BigEndian.Uint32(b2[16:])
	n := int(binary.BigEndian.Uint16(b2[20:]))
	rest := b[statusFixedLen:]
	if n > maxStatusNaks || len(rest) != nakLen*n {
		return fmt.Errorf("mtftp: status with %d NAKs in %d bytes", n, len(rest))
	}
	p.Naks = p.nakBuffer[:n]
	for i := range n {
		e := rest[nakLen*i:]
		p.Naks[i] = nak{binary.BigEndian.Uint32(e), binary.BigEndian.Uint16(e[4:]), binary.BigEndian.Uint64(e[6:])}
	}
	return nil
}

func appendDone(b []byte, id uint32, tok token, ok bool) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeDone)
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, tok[:]...)
	if ok {
		return append(b, 1)
	}
	return append(b, 0)
}

func parseDone(b []byte) (id uint32, tok token, ok bool, err error) {
	if len(b) != 7+tokenLen || binary.BigEndian.Uint16(b) != opNativeDone {
		return 0, tok, false, errShort
	}
	return binary.BigEndian.Uint32(b[2:]), token(b[6 : 6+tokenLen]), b[6+tokenLen] == 1, nil
}

// appendDoneAck tells a receiver its DONE was counted. It is shorter
// than the DONE it answers: no amplification.
func appendDoneAck(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeDoneAck)
	return binary.BigEndian.AppendUint32(b, id)
}

// isDoneAck reports whether b acknowledges the DONE of session id.
func isDoneAck(b []byte, id uint32) bool {
	return len(b) == 6 && binary.BigEndian.Uint16(b) == opNativeDoneAck && binary.BigEndian.Uint32(b[2:]) == id
}

// appendChallenge asks a would-be receiver to echo cookie in its RRQ. It
// is shorter than any RRQ that provokes it: no amplification.
func appendChallenge(b []byte, cookie token) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeChallenge)
	return append(b, cookie[:]...)
}

func parseChallenge(b []byte) (token, error) {
	if len(b) != 2+tokenLen || binary.BigEndian.Uint16(b) != opNativeChallenge {
		return token{}, errShort
	}
	return token(b[2:]), nil
}

func nativeOp(b []byte) uint16 {
	if len(b) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

// wantPkt names stripes First .. First+Count−1 of a session: bit i of Bits
// (LSB first in each byte) set means stripe First+i is needed.
type wantPkt struct {
	ID           uint32
	Token        token
	First, Count uint32
	Bits         []byte
}

func appendWant(b []byte, p *wantPkt) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeWant)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = append(b, p.Token[:]...)
	b = binary.BigEndian.AppendUint32(b, p.First)
	b = binary.BigEndian.AppendUint32(b, p.Count)
	return append(b, p.Bits[:(p.Count+7)/8]...)
}

// parseWant reads a WANT; Bits aliases b.
func parseWant(b []byte) (wantPkt, error) {
	var p wantPkt
	if len(b) < wantFixedLen || binary.BigEndian.Uint16(b) != opNativeWant {
		return p, errShort
	}
	p.ID = binary.BigEndian.Uint32(b[2:])
	p.Token = token(b[6 : 6+tokenLen])
	p.First = binary.BigEndian.Uint32(b[6+tokenLen:])
	p.Count = binary.BigEndian.Uint32(b[10+tokenLen:])
	p.Bits = b[wantFixedLen:]
	if p.Count == 0 || p.Count > maxWantBits || uint32(len(p.Bits)) != (p.Count+7)/8 {
		return p, fmt.Errorf("mtftp: want of %d stripes in %d bytes", p.Count, len(p.Bits))
	}
	return p, nil
}

// wantAckPkt acknowledges the WANT for First/Count; From is the carousel
// position from which the server serves those stripes (each at its first
// position at or after From), so the receiver knows when one has passed.
type wantAckPkt struct {
	ID           uint32
	First, Count uint32
	From         uint64
}

func appendWantAck(b []byte, p *wantAckPkt) []byte {
	b = binary.BigEndian.AppendUint16(b, opNativeWantAck)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = binary.BigEndian.AppendUint32(b, p.First)
	b = binary.BigEndian.AppendUint32(b, p.Count)
	return binary.BigEndian.AppendUint64(b, p.From)
}

func parseWantAck(b []byte) (wantAckPkt, error) {
	if len(b) != wantAckLen || binary.BigEndian.Uint16(b) != opNativeWantAck {
		return wantAckPkt{}, errShort
	}
	return wantAckPkt{binary.BigEndian.Uint32(b[2:]), binary.BigEndian.Uint32(b[6:]), binary.BigEndian.Uint32(b[10:]), binary.BigEndian.Uint64(b[14:])}, nil
}
