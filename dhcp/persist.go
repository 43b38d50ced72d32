package dhcp

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
)

// leaseFileVersion is the "version" of the JSON lease file.
const leaseFileVersion = 1

// leaseFile is the on-disk form: one JSON document, rewritten whole.
type leaseFile struct {
	Version  int              `json:"version"`
	Leases   []leaseRecord    `json:"leases"`
	Declined []declinedRecord `json:"declined,omitempty"`
}

type leaseRecord struct {
	ClientID string     `json:"client_id,omitempty"` // hex of option 61
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
	Start    time.Time  `json:"start"`
	Expiry   time.Time  `json:"expiry"`
	Static   bool       `json:"static,omitempty"`
	Arch     string     `json:"arch,omitempty"`
}

type declinedRecord struct {
	IP    netip.Addr `json:"ip"`
	Until time.Time  `json:"until"`
}

// snapshot encodes the table; the caller holds s.mu. Records that no
// longer hold their address (another client took it after expiry) carry
// no information and are left out.
func (t *leaseTable) snapshot() leaseFile {
	f := leaseFile{Version: leaseFileVersion, Leases: make([]leaseRecord, 0, len(t.byIP))}
	for ip, b := range t.byIP {
		if b.expiry.IsZero() || b.ip != ip {
			continue
		}
		r := leaseRecord{
			MAC: macString(b.mac, ':'), IP: b.ip, Hostname: b.hostname,
			Start: b.start, Expiry: b.expiry, Static: b.static, Arch: b.arch,
		}
		if len(b.clientID) > 0 {
			r.ClientID = hex.EncodeToString(b.clientID)
		}
		f.Leases = append(f.Leases, r)
	}
	for ip, until := range t.declined {
		if until.After(t.now) {
			f.Declined = append(f.Declined, declinedRecord{IP: ip, Until: until})
		}
	}
	// Sorted, so that the file diffs well and tests can compare it.
	slices.SortFunc(f.Leases, func(a, b leaseRecord) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(f.Declined, func(a, b declinedRecord) int { return a.IP.Compare(b.IP) })
	return f
}

// appendJSON encodes f as encoding/json would (one lease per line): by
// hand, because reflection and indenting cost more than the fsync itself
// (1.6 ms for 500 leases against 1.2 ms for the write; this: ~0.1 ms).
func (f *leaseFile) appendJSON(b []byte) []byte {
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, int64(f.Version), 10)
	b = append(b, `,"leases":[`...)
	for i, r := range f.Leases {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n{"...)
		if r.ClientID != "" {
			b = append(b, `"client_id":`...)
			b = appendJSONString(b, r.ClientID)
			b = append(b, ',')
		}
		b = append(b, `"mac":`...)
		b = appendJSONString(b, r.MAC)
		b = append(b, `,"ip":"`...)
		b = r.IP.AppendTo(b)
		b = append(b, '"')
		if r.Hostname != "" {
			b = append(b, `,"hostname":`...)
			b = appendJSONString(b, r.Hostname)
		}
		b = append(b, `,"start":`...)
		b = appendJSONTime(b, r.Start)
		b = append(b, `,"expiry":`...)
		b = appendJSONTime(b, r.Expiry)
		if r.Static {
			b = append(b, `,"static":true`...)
		}
		if r.Arch != "" {
			b = append(b, `,"arch":`...)
			b = appendJSONString(b, r.Arch)
		}
		b = append(b, '}')
	}
	b = append(b, "\n]"...)
	if len(f.Declined) > 0 {
		b = append(b, `,"declined":[`...)
		for i, d := range f.Declined {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, "\n{\"ip\":\""...)
			b = d.IP.AppendTo(b)
			b = append(b, `","until":`...)
			b = appendJSONTime(b, d.Until)
			b = append(b, '}')
		}
		b = append(b, "\n]"...)
	}
	return append(b, "}\n"...)
}

func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano) // what time.Time.MarshalJSON writes
	return append(b, '"')
}

// appendJSONString quotes s as JSON: control characters, quote and
// backslash escaped, invalid UTF-8 replaced by U+FFFD (as encoding/json
// does). Host names come from clients (option 12): any bytes at all.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// restore fills an empty table from a decoded file. It fails on any
// record that does not make sense, so that the caller sets the file aside
// rather than half-load it.
func (t *leaseTable) restore(f *leaseFile) error {
	if f.Version != leaseFileVersion {
		return fmt.Errorf("version %d, want %d", f.Version, leaseFileVersion)
	}
	for i, r := range f.Leases {
		mac, err := parseMAC(r.MAC)
		if err != nil {
			return fmt.Errorf("leases[%d]: mac: %w", i, err)
		}
		id, err := hex.DecodeString(r.ClientID)
		if err != nil {
			return fmt.Errorf("leases[%d]: client_id: %w", i, err)
		}
		if !r.IP.Is4() {
			return fmt.Errorf("leases[%d]: ip %v is not IPv4", i, r.IP)
		}
		if len(id) == 0 {
			id = nil
		}
		if _, err := strconv.ParseUint(r.Arch, 10, 16); r.Arch != "" && err != nil {
			return fmt.Errorf("leases[%d]: arch %q is not an option 93 value", i, r.Arch)
		}
		if len(id) == 0 && len(mac) == 0 {
			return fmt.Errorf("leases[%d]: neither client_id nor mac", i)
		}
		if o := t.byIP[r.IP]; o != nil && !r.Expiry.After(o.expiry) {
			continue // duplicate address: the later lease wins
		}
		key := clientKey(id, mac)
		b := t.byKey[key]
		if b == nil {
			b = t.create(key, id, mac)
		} else if !r.Expiry.After(b.expiry) {
			continue // duplicate client: the later lease wins
		}
		b.hostname, b.start, b.expiry, b.static, b.arch = r.Hostname, r.Start, r.Expiry, r.Static, r.Arch
		t.setIP(b, r.IP)
	}
	declined := slices.Clone(f.Declined)
	slices.SortFunc(declined, func(a, b declinedRecord) int { return a.Until.Compare(b.Until) })
	for _, d := range declined {
		if d.IP.Is4() {
			t.quarantine(d.IP, d.Until)
		}
	}
	return nil
}

// leaseStore makes the lease table durable with group commit: a caller
// that needs its change on disk waits for a write that started after the
// change. One writer at a time snapshots the whole table, so every change
// made while a write is in flight rides on the next one: a storm of N
// ACKs costs a handful of fsyncs, not N.
type leaseStore struct {
	path    string
	encode  func() (data []byte, seq uint64) // snapshot under the table lock
	write   func(path string, data []byte) error
	onWrite func(err error)

	mu      sync.Mutex
	cond    *sync.Cond
	durable uint64
	writing bool
}

func newLeaseStore(path string, encode func() ([]byte, uint64), onWrite func(error)) *leaseStore {
	st := &leaseStore{path: path, encode: encode, write: writeFileAtomic, onWrite: onWrite}
	st.cond = sync.NewCond(&st.mu)
	return st
}

// wait returns once every change up to seq is on disk, writing it itself
// if no write is in flight (the leader), else waiting for the one in
// flight and, if that did not cover seq, leading the next.
func (st *leaseStore) wait(seq uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.durable < seq {
		if st.writing {
			st.cond.Wait()
			continue
		}
		st.writing = true
		st.mu.Unlock()
		data, snap := st.encode()
		err := st.write(st.path, data)
		st.onWrite(err)
		st.mu.Lock()
		st.writing = false
		if err == nil && snap > st.durable {
			st.durable = snap
		}
		st.cond.Broadcast()
		if err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic replaces path with data so that a crash at any point
// leaves either the old file or the new one (internal/atomicfile). The
// lease file names clients: readable by mtftpd's user only.
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}

// tempInfix marks a lease file's temp files: LeaseFile + ".tmp-" + random.
const tempInfix = atomicfile.TempInfix

// loadLeases reads path into t. A missing file is an empty table. A file
// that does not parse is renamed to path + ".corrupt-<unix time>" and
// reported as an error in the log, and the table starts empty; it is never
// overwritten in place. Temp files left by a crash mid-write are removed:
// the real file was never replaced by them.
func (s *Server) loadLeases(path string, now time.Time) error {
	for _, tmp := range atomicfile.RemoveTemps(path) {
		s.Log.Warn().Str("file", tmp).Msg("dhcp: removed a temp lease file left by an interrupted write")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		s.Log.Info().Str("file", path).Msg("dhcp: no lease file yet, starting empty")
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: LeaseFile: %w", err)
	}
	var f leaseFile
	t := s.newTable()
	err = json.Unmarshal(data, &f)
	if err == nil {
		err = t.restore(&f)
	}
	if err != nil {
		aside := path + ".corrupt-" + strconv.FormatInt(now.Unix(), 10)
		if rerr := os.Rename(path, aside); rerr != nil {
			return fmt.Errorf("dhcp: lease file %s is corrupt (%v) and cannot be set aside: %w", path, err, rerr)
		}
		s.Log.Error().Err(err).Str("file", path).Str("moved_to", aside).Int("bytes", len(data)).
			Msg("dhcp: lease file corrupt: set aside, starting with no leases (clients keep their addresses if still free)")
		return nil
	}
	s.leases = t
	s.Log.Info().Str("file", path).Int("leases", len(f.Leases)).Int("declined", len(f.Declined)).Msg("dhcp: leases loaded")
	return nil
}

// parseMAC reads macString's format; unlike net.ParseMAC it takes any
// chaddr length (hlen is 0..16, RFC 2131 §2).
func parseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	if (len(s)+1)%3 != 0 || len(s) > 16*3-1 {
		return nil, fmt.Errorf("bad hardware address %q", s)
	}
	mac := make(net.HardwareAddr, (len(s)+1)/3)
	for i := range mac {
		if i > 0 && s[i*3-1] != ':' {
			return nil, fmt.Errorf("bad hardware address %q", s)
		}
		b, err := hex.DecodeString(s[i*3 : i*3+2])
		if err != nil {
			return nil, fmt.Errorf("bad hardware address %q", s)
		}
		mac[i] = b[0]
	}
	return mac, nil
}
