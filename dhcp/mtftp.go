package dhcp

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// MTFTPGroups says on which multicast group a boot file is served by PXE
// MTFTP (docs/protocols.md §7.4). mtftp.Server implements it; cmd/mtftpd wires
// the two together, so this package never imports mtftp.
type MTFTPGroups interface {
	// PXEFileGroup returns the group and client port file is multicast on
	// by the PXE MTFTP server at server (the boot server address the
	// client is given), and that server's port. ok false: announce no
	// PXE MTFTP for this file (the client then uses plain TFTP). Called
	// concurrently.
	PXEFileGroup(file string, server netip.Addr) (group netip.AddrPort, serverPort uint16, ok bool)
}

// Defaults of PXEMTFTP. atftp's PXE MTFTP client waits 2 s in both places
// (its --mtftp listen-delay and timeout-delay); the PXE spec text that
// would name defaults could not be read (docs/protocols.md §12).
const (
	DefaultMTFTPListenTimeout = 2 * time.Second
	DefaultMTFTPReopenDelay   = 2 * time.Second
)

// PXEMTFTP announces PXE MTFTP in option 43 sub-options 1–5 (docs/protocols.md
// §7.1): the boot file's group (43.1), client port (43.2), server port
// (43.3) and the client's timers (43.4, 43.5). Only BIOS PXE ROMs get them
// (option 93 = 0, not iPXE): UEFI firmware (EDK2) discards an offer that
// carries them, and iPXE ignores them.
type PXEMTFTP struct {
	// Groups gives each boot file its group. Required.
	Groups MTFTPGroups
	// ListenTimeout is 43.4 PXE_MTFTP_TMOUT: how long a client listens
	// for a running pass before it opens one. Whole seconds, 1..255;
	// 0 = DefaultMTFTPListenTimeout.
	ListenTimeout time.Duration
	// ReopenDelay is 43.5 PXE_MTFTP_DELAY: the client's re-open delay
	// and per-packet timeout. Whole seconds, 1..255; 0 =
	// DefaultMTFTPReopenDelay.
	ReopenDelay time.Duration
	// PortOrder encodes the ports 43.2 and 43.3. nil = binary.BigEndian
	// (network order, like every other DHCP field). Intel's sample code
	// stores them little-endian ("Intel order"); which one real ROMs
	// read is unverified (docs/protocols.md §7.1), hence the choice.
	PortOrder binary.ByteOrder
}

// mtftpConfig is PXEMTFTP normalised by validate.
type mtftpConfig struct {
	groups       MTFTPGroups
	tmout, delay byte
	order        binary.ByteOrder
}

func (s *Server) validateMTFTP(bad func(format string, a ...any)) {
	m := s.PXEMTFTP
	if m == nil {
		return
	}
	if m.Groups == nil {
		bad("PXEMTFTP.Groups: nil")
	}
	secs := func(field string, d, def time.Duration) byte {
		if d == 0 {
			d = def
		}
		if d < time.Second || d > 255*time.Second || d%time.Second != 0 {
			bad("PXEMTFTP.%s: %v is not a whole number of seconds in 1..255", field, d)
		}
		return byte(d / time.Second)
	}
	c := &mtftpConfig{groups: m.Groups, order: m.PortOrder,
		tmout: secs("ListenTimeout", m.ListenTimeout, DefaultMTFTPListenTimeout),
		delay: secs("ReopenDelay", m.ReopenDelay, DefaultMTFTPReopenDelay)}
	if c.order == nil {
		c.order = binary.BigEndian
	}
	s.mtftp = c
}

// mtftpOptions returns 43.1–43.5 for a boot answer, or nil. Only a BIOS
// PXE ROM (option 93 = 0, PXEClient, not iPXE) fetching a TFTP file gets
// them: EDK2 classes an offer with MTFTP sub-options as "WfM 1.1a" and
// drops it (docs/protocols.md §7.1, §9.3), iPXE listens on its fixed
// group whatever we say (§7.5), and HTTP Boot has no use for them.
func (s *Server) mtftpOptions(c Client, b *bootAnswer) []byte {
	m := s.mtftp
	if m == nil || !c.PXE || c.IPXE || c.HTTPClient || b.IsURL() {
		return nil
	}
	if a, ok := c.PrimaryArch(); !ok || a != 0 {
		return nil
	}
	group, sport, ok := m.groups.PXEFileGroup(b.File, b.siaddr)
	if !ok || !group.Addr().Is4() {
		return nil
	}
	s.Counters.MTFTPAnnounced.Add(1)
	return mtftpSubOptions(group, sport, m.tmout, m.delay, m.order)
}

// mtftpSubOptions encodes PXE_MTFTP_IP, _CPORT, _SPORT, _TMOUT and _DELAY
// (code, length, value each; docs/protocols.md §7.1).
func mtftpSubOptions(group netip.AddrPort, serverPort uint16, tmout, delay byte, order binary.ByteOrder) []byte {
	g := group.Addr().As4()
	b := []byte{
		1, 4, g[0], g[1], g[2], g[3],
		2, 2, 0, 0,
		3, 2, 0, 0,
		4, 1, tmout,
		5, 1, delay,
	}
	order.PutUint16(b[8:], group.Port())
	order.PutUint16(b[12:], serverPort)
	return b
}
