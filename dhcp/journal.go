package dhcp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// The lease journal's on-disk format (docs/dhcp-leases.md): an 8-byte
// magic, then records, each a little-endian u32 payload length, the
// payload's CRC-32C as a little-endian u32, and the payload. Records are
// states, not operations: the latest record naming an address says who
// holds it, so replaying a journal in order rebuilds the table however
// often an address changed hands.
const (
	journalMagic = "MTFTPDL1" // "1": the format version
	recHeader    = 8          // u32 length + u32 CRC-32C
	// maxPayload bounds one record: a lease record's variable fields
	// (client id, host name) come from one DHCP packet, at most 65,507
	// bytes of UDP payload; a length beyond it is damage, not a record.
	maxPayload = 1 << 17
	// maxWrite bounds what one append writes before its fdatasync, so a
	// torn write (a power cut mid-append) can only be in the last
	// maxWrite bytes of the file; damage further in is corruption.
	maxWrite = 1 << 20
	// sectorSize is the unit a disk writes whole or not at all (512
	// bytes: the smallest sector in use); a torn record has a piece in
	// one such sector that was never written and reads back as zeros.
	sectorSize = 512
)

// Record kinds (the payload's first byte).
const (
	recLease      byte = 'L' // ip, start, expiry, flags, mac, client id, host name, arch
	recDelete     byte = 'D' // ip: nobody holds it any more
	recQuarantine byte = 'Q' // ip, until: DECLINEd, not handed out until then

	// v6Kind, or'ed into the kind, marks a record whose ip is IPv6 (16
	// bytes, a DHCPv6 lease: the kind letter in lower case); IPv4
	// records hold 4.
	v6Kind byte = 0x20
)

// maxMAC is chaddr's largest length (hlen, RFC 2131 §2).
const maxMAC = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrJournalCorrupt reports a damaged record that is not a torn last
// write: a bad length or checksum with data after it, or a record whose
// checksum holds but whose content makes no sense.
var ErrJournalCorrupt = errors.New("lease journal corrupt")

// CorruptError names where a journal is damaged. Records before Offset
// are good.
type CorruptError struct {
	Offset int64 // of the damaged record's header
	Size   int64 // of the file
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("lease journal corrupt at offset %d of %d bytes: %s", e.Offset, e.Size, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrJournalCorrupt }

// jrec is one journal record, decoded.
type jrec struct {
	kind          byte
	ip            netip.Addr
	start, expiry time.Time // a quarantine's end is in expiry
	static        bool
	mac, clientID []byte
	hostname      string
	arch          string
}

// appendRecord appends r's header and payload to b.
func appendRecord(b []byte, r *jrec) []byte {
	at := len(b)
	b = append(b, make([]byte, recHeader)...)
	if r.ip.Is6() {
		ip := r.ip.As16()
		b = append(b, r.kind|v6Kind)
		b = append(b, ip[:]...)
	} else {
		ip := r.ip.As4()
		b = append(b, r.kind)
		b = append(b, ip[:]...)
	}
	switch r.kind {
	case recLease:
		b = appendTime(b, r.start)
		b = appendTime(b, r.expiry)
		var flags byte
		if r.static {
			flags |= 1
		}
		b = append(b, flags)
		b = appendField(b, r.mac)
		b = appendField(b, r.clientID)
		b = appendField(b, []byte(r.hostname))
		b = appendField(b, []byte(r.arch))
	case recQuarantine:
		b = appendTime(b, r.expiry)
	}
	payload := b[at+recHeader:]
	binary.LittleEndian.PutUint32(b[at:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[at+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// appendTime writes seconds and nanoseconds since 1970 (the zero Time
// included, which UnixNano cannot hold).
func appendTime(b []byte, t time.Time) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.LittleEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// appendField writes a u16 length and the bytes. Every field comes from
// one DHCP packet, so it fits; a longer one would be cut rather than
// write a record the reader refuses.
func appendField(b, f []byte) []byte {
	if len(f) > 0xffff {
		f = f[:0xffff]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(f)))
	return append(b, f...)
}

// decodeRecord parses one payload whose checksum held. Every field is
// bounded by the payload, which is bounded by maxPayload.
func decodeRecord(p []byte, r *jrec) error {
	d := decoder{p: p}
	*r = jrec{kind: d.byte()}
	if r.kind >= 'a' && r.kind <= 'z' {
		r.kind &^= v6Kind
		r.ip = netip.AddrFrom16([16]byte(d.bytes(16)))
	} else {
		r.ip = netip.AddrFrom4([4]byte(d.bytes(4)))
	}
	switch r.kind {
	case recLease:
		r.start, r.expiry = d.time(), d.time()
		flags := d.byte()
		r.static = flags&1 != 0
		r.mac = net.HardwareAddr(d.field())
		r.clientID = d.field()
		r.hostname = string(d.field())
		r.arch = string(d.field())
		switch {
		case d.err == nil && flags&^1 != 0:
			d.err = fmt.Errorf("unknown flags %#x", flags)
		case d.err == nil && len(r.mac) > maxMAC:
			d.err = fmt.Errorf("hardware address of %d bytes (at most %d)", len(r.mac), maxMAC)
		case d.err == nil && len(r.mac) == 0 && len(r.clientID) == 0:
			d.err = errors.New("neither client id nor hardware address")
		case d.err == nil && r.arch != "":
			if _, err := strconv.ParseUint(r.arch, 10, 16); err != nil {
				d.err = fmt.Errorf("arch %q is not an option 93 value", r.arch)
			}
		}
		if len(r.mac) == 0 {
			r.mac = nil
		}
		if len(r.clientID) == 0 {
			r.clientID = nil
		}
	case recDelete:
	case recQuarantine:
		r.expiry = d.time()
	default:
		if d.err == nil {
			d.err = fmt.Errorf("unknown record kind %#x", r.kind)
		}
	}
	if d.err == nil && len(d.p) != 0 {
		d.err = fmt.Errorf("%d bytes after the record's fields", len(d.p))
	}
	return d.err
}

// decoder reads a payload; the first short read sets err and makes
// every later read return zeros.
type decoder struct {
	p   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || len(d.p) < n {
		if d.err == nil {
			d.err = fmt.Errorf("record ends %d bytes short", n-len(d.p))
		}
		return make([]byte, n)
	}
	b := d.p[:n:n]
	d.p = d.p[n:]
	return b
}

func (d *decoder) byte() byte { return d.bytes(1)[0] }

func (d *decoder) time() time.Time {
	b := d.bytes(12)
	sec, nsec := int64(binary.LittleEndian.Uint64(b)), binary.LittleEndian.Uint32(b[8:])
	if d.err == nil && nsec >= 1e9 {
		d.err = fmt.Errorf("nanoseconds %d out of range", nsec)
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *decoder) field() []byte {
	n := int(binary.LittleEndian.Uint16(d.bytes(2)))
	return append([]byte(nil), d.bytes(n)...)
}

// journalEnd is how a read ended.
type journalEnd struct {
	good    int64 // bytes of magic and good records: where the next record goes
	records int   // good records
	torn    int64 // bytes of a torn last write dropped after good (0: none)
	zeros   int64 // bytes of zeros after good: the room the store grew ahead (0: none)
}

// readJournal reads a journal of size bytes from r and calls apply on
// each good record in order. It stops at the end, at zeros that run to
// the end (the room the store grows ahead, journalEnd.zeros), at a torn
// last write (dropped, reported in journalEnd.torn), or at damage,
// returned as a *CorruptError (records before it were applied). Memory
// is bounded by maxPayload whatever the input; CPU by its size.
func readJournal(r io.Reader, size int64, apply func(*jrec) error) (journalEnd, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var end journalEnd
	magic := make([]byte, len(journalMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != journalMagic {
		return end, &CorruptError{Size: size, Reason: "no lease journal header"}
	}
	end.good = int64(len(journalMagic))
	buf := make([]byte, recHeader, 4<<10)
	var rec jrec
	for {
		off := end.good
		n, err := io.ReadFull(br, buf[:recHeader])
		if err == io.EOF {
			return end, nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return end, err
		}
		corrupt := func(reason string) (journalEnd, error) {
			return end, &CorruptError{Offset: off, Size: size, Reason: reason}
		}
		// torn ends the read at a record that is not whole, read is
		// what of it was read: zeros up to the end are the room grown
		// ahead; else what one append could have written — data no
		// further than maxWrite from off — is a torn last write, and
		// data beyond it was synced long ago: damage.
		torn := func(read []byte) (journalEnd, error) {
			last, err := lastNonZero(br, read, off)
			switch {
			case err != nil:
				return end, err
			case last == off:
				end.zeros = size - off
				return end, nil
			case last-off > maxWrite:
				return corrupt(fmt.Sprintf("a record that looks torn, with data %d bytes after it (one append writes at most %d)", last-off, maxWrite))
			}
			end.torn = size - off
			return end, nil
		}
		if n < recHeader {
			return torn(buf[:n]) // cut short by the end of the file
		}
		plen := int64(binary.LittleEndian.Uint32(buf))
		sum := binary.LittleEndian.Uint32(buf[4:])
		switch {
		case plen == 0 && sum == 0:
			return torn(buf[:recHeader]) // never written: zeros
		case plen == 0 || plen > maxPayload:
			if zeroPiece(buf[:recHeader], off) {
				return torn(buf[:recHeader]) // part of the header never written
			}
			return corrupt(fmt.Sprintf("record length %d (1..%d)", plen, maxPayload))
		case off+recHeader+plen > size:
			return torn(buf[:recHeader])
		}
		if int64(cap(buf)) < recHeader+plen {
			buf = append(buf[:recHeader], make([]byte, plen)...)
		}
		buf = buf[:recHeader+plen]
		if k, err := io.ReadFull(br, buf[recHeader:]); err != nil {
			return torn(buf[:recHeader+k]) // the file shrank under us: its end moved
		}
		if crc32.Checksum(buf[recHeader:], castagnoli) != sum {
			if zeroPiece(buf, off) {
				return torn(buf)
			}
			return corrupt("checksum mismatch")
		}
		if err := decodeRecord(buf[recHeader:], &rec); err != nil {
			return corrupt(err.Error())
		}
		if err := apply(&rec); err != nil {
			return corrupt(err.Error())
		}
		end.good = off + recHeader + plen
		end.records++
	}
}

// lastNonZero returns the file offset just past the last non-zero byte
// from off on (off if there is none): read holds the bytes from off
// already read, r the rest, read to its end in pieces.
func lastNonZero(r io.Reader, read []byte, off int64) (int64, error) {
	last, pos := off, off
	chunk := read
	var scratch []byte
	for {
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != 0 {
				last = pos + int64(i) + 1
				break
			}
		}
		pos += int64(len(chunk))
		if scratch == nil {
			scratch = make([]byte, 32<<10)
		}
		n, err := r.Read(scratch)
		chunk = scratch[:n]
		if err == io.EOF {
			if n == 0 {
				return last, nil
			}
		} else if err != nil {
			return last, err
		}
	}
}

// zeroPiece reports whether the record b, at file offset off, has a
// piece lying in one disk sector that is all zeros: the mark of a write
// that reached the disk only in part (the sectors not written read back
// as zeros, from a new block or an extended file).
func zeroPiece(b []byte, off int64) bool {
	for i := 0; i < len(b); {
		j := i + int(sectorSize-(off+int64(i))%sectorSize)
		j = min(j, len(b))
		zero := true
		for _, c := range b[i:j] {
			if c != 0 {
				zero = false
				break
			}
		}
		if zero {
			return true
		}
		i = j
	}
	return false
}
