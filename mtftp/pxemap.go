package mtftp

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sync"

	"github.com/mtftpd/mtftpd/internal/filestore"
)

// PXE MTFTP gives every boot file its own group and client port, which the
// DHCP server announces in option 43.1/43.2 to BIOS PXE ROMs
// (docs/protocols.md §7.1, §7.4). The multicast DATA carries no file name, so
// two files sharing a group would corrupt each other's clients: a group
// is never given to two files, and iPXE's fixed group serves one file at a
// time.

var (
	// DefaultPXEFileGroups is where boot files get their own group; iPXE's
	// fixed group (PXEGroup) inside it is skipped.
	DefaultPXEFileGroups = netip.MustParsePrefix("239.255.1.0/24")
)

// DefaultPXEFilePort is the client port of a boot file's first slot; slot
// i listens on DefaultPXEFilePort+i (iPXE's fixed 3001 is below them).
const DefaultPXEFilePort = 3002

// pxeFileMap is the table boot file → slot (group PXEFileGroups.Addr()+i,
// client port PXEFilePort+i). A file gets its slot the first time the
// DHCP server advertises it (Server.PXEFileGroup): the slot its name hashes
// to, or the next free one. So the same boot files get the same groups
// after a restart (a client that got its offer before still finds its
// group) unless two names collide and arrive in another order. Entries
// are never removed: the table is bounded by the number of slots, and a
// group must not change under a client that was told it.
type pxeFileMap struct {
	mu     sync.Mutex
	base   netip.Addr
	port   int
	slots  int
	skip   netip.Addr // iPXE's fixed group: never a file's
	byName map[string]int
	bySlot map[int]string
}

// setup sizes the table: one slot per address of groups, as far as the
// client ports reach (at most 65535). Called from validate; a table that
// already holds files keeps them (validate runs again on every Init).
func (m *pxeFileMap) setup(groups netip.Prefix, port int, skip netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byName != nil {
		return
	}
	m.base, m.port, m.skip = groups.Masked().Addr(), port, skip
	m.slots = min(1<<(32-groups.Bits()), 65536-port)
	m.byName, m.bySlot = map[string]int{}, map[int]string{}
}

func (m *pxeFileMap) addr(slot int) netip.AddrPort {
	b := m.base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(slot)
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), uint16(m.port+slot))
}

// lookup returns the group of a file that has one.
func (m *pxeFileMap) lookup(name string) (netip.AddrPort, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.byName[name]
	if !ok {
		return netip.AddrPort{}, false
	}
	return m.addr(i), true
}

// assign returns name's group, giving it one if it has none; false when
// every slot is taken.
func (m *pxeFileMap) assign(name string) (netip.AddrPort, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.byName[name]; ok {
		return m.addr(i), true
	}
	if m.slots <= 0 {
		return netip.AddrPort{}, false
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	start := int(h.Sum32() % uint32(m.slots))
	for k := range m.slots {
		i := (start + k) % m.slots
		if _, taken := m.bySlot[i]; taken || m.addr(i).Addr() == m.skip {
			continue
		}
		m.byName[name], m.bySlot[i] = i, name
		return m.addr(i), true
	}
	return netip.AddrPort{}, false
}

// validatePXE checks and defaults the PXE MTFTP per-file fields; called
// from validate.
func (s *Server) validatePXE() error {
	var errs []error
	// validate runs on every Init, while PXEFileGroup and the listener
	// read these fields: assign only what changes (the first time).
	if !s.PXEFileGroups.IsValid() {
		s.PXEFileGroups = DefaultPXEFileGroups
	}
	if g := s.PXEFileGroups.Masked(); g != s.PXEFileGroups {
		s.PXEFileGroups = g
	}
	g := s.PXEFileGroups
	if !g.Addr().Is4() || g.Bits() < allowedScope.Bits() || !allowedScope.Contains(g.Addr()) {
		errs = append(errs, fmt.Errorf("mtftp: PXEFileGroups %s is not inside %s", g, allowedScope))
	} else if g.Overlaps(s.GroupRange) {
		// An RFC 2090 session on a file's group would mix two streams.
		errs = append(errs, fmt.Errorf("mtftp: PXEFileGroups %s overlaps GroupRange %s", g, s.GroupRange))
	}
	if s.PXEFilePort == 0 {
		s.PXEFilePort = DefaultPXEFilePort
	}
	if s.PXEFilePort < 1 || s.PXEFilePort > 65535 {
		errs = append(errs, fmt.Errorf("mtftp: PXEFilePort %d is outside 1..65535", s.PXEFilePort))
	}
	if s.PXEListen != "" && !s.pxeAddr.IsValid() {
		ua, err := net.ResolveUDPAddr("udp4", s.PXEListen)
		if err != nil {
			errs = append(errs, fmt.Errorf("mtftp: PXEListen: %w", err))
		} else {
			s.pxeAddr = netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
		}
	}
	if len(errs) == 0 {
		s.pxeFiles.setup(g, s.PXEFilePort, s.PXEGroup)
	}
	return errors.Join(errs...)
}

// PXEFileGroup returns the group and client port on which the PXE MTFTP
// listener serves file, giving the file a group of its own on first use,
// and the listener's port (option 43.3). It is what the DHCP server asks
// before it announces PXE MTFTP to a BIOS PXE ROM (dhcp.MTFTPGroups).
//
// ok is false, and nothing is announced (the ROM then uses plain TFTP),
// when no PXE listener answers at server (the boot server address the
// client is given), the file cannot be served (missing, or over
// PXEMaxSize), or every group is taken. Safe for concurrent use.
func (s *Server) PXEFileGroup(file string, server netip.Addr) (group netip.AddrPort, serverPort uint16, ok bool) {
	if err := s.Init(); err != nil || !s.pxeAddr.IsValid() {
		return netip.AddrPort{}, 0, false
	}
	if a := s.pxeAddr.Addr(); !a.IsUnspecified() && a != server {
		return netip.AddrPort{}, 0, false
	}
	f, err := s.Files.Get(file)
	if err != nil {
		return netip.AddrPort{}, 0, false
	}
	name, size := f.Name(), f.Size()
	f.Release()
	if size > PXEMaxSize {
		return netip.AddrPort{}, 0, false
	}
	group, ok = s.pxeFiles.assign(name)
	return group, s.pxeAddr.Port(), ok
}

// pxeGroupOf is the group a request for name is served on: the file's
// own if the DHCP server gave it one, else iPXE's fixed group (iPXE
// ignores option 43 and always listens there).
func (s *Server) pxeGroupOf(name string) netip.AddrPort {
	if clean, err := filestore.CleanName(name); err == nil {
		if g, ok := s.pxeFiles.lookup(clean); ok {
			return g
		}
	}
	return netip.AddrPortFrom(s.PXEGroup, uint16(s.PXEClientPort))
}
