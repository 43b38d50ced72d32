package dhcp

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// leaseFileVersion is the "version" of the JSON lease file.
const leaseFileVersion = 1

// leaseFile is the old on-disk form, one JSON document rewritten whole
// at every change: read once at start and migrated to the journal
// (journal.go, store.go).
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
