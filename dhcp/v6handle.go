package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/rs/zerolog"
)

// Incoming6 is where a DHCPv6 message came from.
type Incoming6 struct {
	Src     netip.AddrPort // the client's link-local address and port
	IfIndex int            // receiving interface (0 = unknown)
	// IfAddr is the server's address on the receiving link inside
	// Prefix: the host of tftp:// URLs and of the default {{.HTTP}}.
	IfAddr netip.Addr
}

// Handle answers one DHCPv6 message: the reply's bytes, or nil when
// nothing is to be sent. A Reply that commits a lease returns once the
// lease is on disk (LeaseFile); if it cannot be written, the error says
// so and nothing is to be sent. It touches no socket.
func (s *Server6) Handle(pkt []byte, in Incoming6, now time.Time) ([]byte, error) {
	if err := s.setup(); err != nil {
		return nil, err
	}
	reply, seq := s.handle(pkt, in, now)
	if reply == nil {
		return nil, nil
	}
	if err := s.durable(seq); err != nil {
		return nil, err
	}
	s.countSent(reply)
	return reply, nil
}

func (s *Server6) countSent(reply []byte) {
	if dhcpv6.MessageType(reply[0]) == dhcpv6.MessageTypeAdvertise {
		s.Counters.Advertise.Add(1)
	} else {
		s.Counters.Reply.Add(1)
	}
}

// req6 is a parsed request and what the handler derived from it.
type req6 struct {
	msg    *dhcpv6.Message
	in     Incoming6
	size   int
	duid   []byte           // the client's DUID (option 1)
	mac    net.HardwareAddr // from a DUID-LL or DUID-LLT; nil otherwise
	client Client
	netbt  bool // asked for option 59: a netboot client
	boot   string
	noBoot bool // no rule matches: no answer at all
}

// handle returns the reply and the change it must wait for (0: none).
func (s *Server6) handle(pkt []byte, in Incoming6, now time.Time) ([]byte, uint64) {
	msg, err := dhcpv6.MessageFromBytes(pkt)
	if err != nil || len(pkt) < 4 {
		s.Counters.BadPacket.Add(1)
		return nil, 0
	}
	src := in.Src.Addr()
	if !src.Is6() || !src.IsLinkLocalUnicast() {
		// Clients send from their link-local address (RFC 8415 §13.1);
		// relayed messages (from a relay's address) are not served.
		s.Counters.Ignored.Add(1)
		return nil, 0
	}
	if !s.srcLimit.Allow(src.WithZone(""), now) {
		s.Counters.RateLimited.Add(1)
		return nil, 0
	}
	r := &req6{msg: msg, in: in, size: len(pkt)}
	if cid := msg.Options.GetOne(dhcpv6.OptionClientID); cid != nil {
		r.duid = cid.ToBytes()
	}
	sid := msg.Options.GetOne(dhcpv6.OptionServerID)
	ours := sid != nil && string(sid.ToBytes()) == string(s.duid)
	mt := msg.MessageType
	switch mt {
	case dhcpv6.MessageTypeSolicit:
		s.Counters.Solicit.Add(1)
	case dhcpv6.MessageTypeRequest:
		s.Counters.Request.Add(1)
	case dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		s.Counters.Renew.Add(1)
	case dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		s.Counters.Release.Add(1)
	case dhcpv6.MessageTypeConfirm:
		s.Counters.Confirm.Add(1)
	case dhcpv6.MessageTypeInformationRequest:
		s.Counters.InfoRequest.Add(1)
	default:
		s.Counters.Ignored.Add(1) // server-to-client or relay messages
		return nil, 0
	}
	// RFC 8415 §16: which messages need a client id, which must and
	// which must not name a server.
	needSID := mt == dhcpv6.MessageTypeRequest || mt == dhcpv6.MessageTypeRenew ||
		mt == dhcpv6.MessageTypeRelease || mt == dhcpv6.MessageTypeDecline
	if (len(r.duid) < 3 || len(r.duid) > maxDUID) && (mt != dhcpv6.MessageTypeInformationRequest || r.duid != nil) {
		s.Counters.BadPacket.Add(1) // no client id (only an Information-request may lack one), or a bad one
		return nil, 0
	}
	if (needSID && !ours) || (!needSID && sid != nil && (mt != dhcpv6.MessageTypeInformationRequest || !ours)) {
		s.Counters.Ignored.Add(1) // another server's, or malformed
		return nil, 0
	}
	if r.mac = duidMAC(r.duid); r.mac == nil {
		r.mac = eui64MAC(src)
	}
	s.classify6(r)
	if !needSID && !r.netboot() {
		// Not for a netboot client, and not addressed to us: on a link
		// with a real DHCPv6 server our Preference 255 would win every
		// host's Solicit (docs/security.md). Messages naming our Server
		// ID (Request, Renew, Release, Decline) follow an Advertise
		// that went to a netboot client, and are answered.
		s.Counters.NotNetboot.Add(1)
		return nil, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases.now = now
	s.leases.sweep(now)
	switch mt {
	case dhcpv6.MessageTypeSolicit:
		return s.solicit(r, now)
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		return s.bind(r, now)
	case dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		return s.release(r, now)
	case dhcpv6.MessageTypeConfirm:
		return s.confirm(r), 0
	default:
		return s.info(r), 0
	}
}

// duidMAC returns the link-layer address a DUID-LLT (type 1) or DUID-LL
// (type 3) of an Ethernet-like interface names (RFC 8415 §11.2, §11.4),
// for {{.MAC}} and the lease list; nil for other DUIDs.
func duidMAC(d []byte) net.HardwareAddr {
	if len(d) < 4 {
		return nil
	}
	var ll []byte
	switch binary.BigEndian.Uint16(d) {
	case 1:
		if len(d) > 8 {
			ll = d[8:]
		}
	case 3:
		ll = d[4:]
	}
	if len(ll) == 0 || len(ll) > maxMAC {
		return nil
	}
	return slices.Clone(net.HardwareAddr(ll))
}

// duidOwner is the per-DUID limit's key of a DHCPv6 client id (IAID +
// DUID): the DUID, unless it is a DUID-UUID of all zeros or all ones —
// what firmware makes of an unset SMBIOS UUID (QEMU without -uuid, cheap
// boards), shared by every such machine in a room (their IAIDs differ:
// firmware and iPXE derive them from the MAC). Then each IA is its own
// owner: such machines are bounded by the pool and the reclaim of stale
// Advertises only, not by MaxPerDUID together.
func duidOwner(cid []byte) string {
	if len(cid) < iaidLen {
		return ""
	}
	d := cid[iaidLen:]
	if len(d) == 18 && d[0] == 0 && d[1] == 4 {
		zero, ones := true, true
		for _, c := range d[2:] {
			zero, ones = zero && c == 0, ones && c == 0xff
		}
		if zero || ones {
			return string(cid)
		}
	}
	return string(d)
}

// eui64MAC returns the MAC a link-local address formed from it (modified
// EUI-64: ff:fe in the middle, the universal/local bit flipped; RFC 4291
// Appendix A), for a client whose DUID names none — iPXE's DUID-UUID,
// for one: {{.MAC}} then still names the machine. Like the DUID, it is
// what the sender says.
func eui64MAC(src netip.Addr) net.HardwareAddr {
	a := src.As16()
	if !src.IsLinkLocalUnicast() || a[11] != 0xff || a[12] != 0xfe {
		return nil
	}
	return net.HardwareAddr{a[8] ^ 0x02, a[9], a[10], a[13], a[14], a[15]}
}

// classify6 reads options 61, 16 and 15 (RFC 5970, RFC 8415 §21.15–16)
// into the Client the boot rules match, with the fallbacks of
// docs/protocols.md §14.3: no option 61 → the vendor class's Arch
// field → DefaultArch for a client that asks for option 59.
func (s *Server6) classify6(r *req6) {
	c := &r.client
	for _, a := range r.msg.Options.ArchTypes() {
		c.Arch = append(c.Arch, uint16(a))
	}
	for _, vc := range r.msg.Options.VendorClasses() {
		for _, d := range vc.Data {
			if c.VendorClass == "" {
				c.VendorClass = string(d)
			}
		}
	}
	c.PXE = strings.HasPrefix(c.VendorClass, vendorPXE)
	c.HTTPClient = strings.HasPrefix(c.VendorClass, vendorHTTP)
	if len(c.Arch) == 0 {
		if a, ok := archFromVendorClass(c.VendorClass); ok {
			c.Arch = []uint16{a}
		}
	}
	for _, uc := range r.msg.Options.UserClasses() {
		c.UserClass = append(c.UserClass, string(uc))
	}
	c.IPXE = slices.Contains(c.UserClass, "iPXE")
	r.netbt = r.msg.IsOptionRequested(dhcpv6.OptionBootfileURL)
	if r.netbt && !c.HTTPClient {
		c.PXE = true
	}
	if len(c.Arch) == 0 && r.netbt && s.DefaultArch != nil {
		c.Arch = []uint16{*s.DefaultArch}
	}
}

// netboot reports whether r comes from a netboot client: one that asks
// for the boot URL (option 59), or sends a PXEClient or HTTPClient vendor
// class or the user class iPXE. OVMF and iPXE send all of the first two
// or three (docs/protocols.md §14.5).
func (r *req6) netboot() bool {
	c := &r.client
	return r.netbt || c.PXE || c.HTTPClient || c.IPXE
}

// decideBoot sets r.boot (option 59's URL, "" for none) or r.noBoot.
func (s *Server6) decideBoot(r *req6, ip netip.Addr, now time.Time) {
	c := r.client
	if !r.netbt {
		return
	}
	host := s.TFTPServer
	if !host.IsValid() {
		host = r.in.IfAddr
	}
	v := BootVars{HTTP: strings.TrimRight(s.HTTPBase, "/"), MAC: macString(r.mac, ':'), MACDash: macString(r.mac, '-')}
	if v.HTTP == "" && r.in.IfAddr.IsValid() {
		v.HTTP = "http://[" + r.in.IfAddr.String() + "]"
		if s.HTTPPort != 0 && s.HTTPPort != 80 {
			v.HTTP = "http://" + netip.AddrPortFrom(r.in.IfAddr, uint16(s.HTTPPort)).String()
		}
	}
	if ip.IsValid() {
		v.IP = ip.String()
	}
	if a, ok := c.PrimaryArch(); ok {
		v.Arch = strconv.Itoa(int(a))
	}
	h := s.hosts[string(r.mac)]
	if h != nil {
		v.Vars, v.Hostname = h.Vars, h.Hostname
	}
	b, ok, err := s.rules.decideFor(h, c, v)
	switch {
	case err != nil:
		s.logLimited(zerolog.WarnLevel, now, "template", func(e *zerolog.Event) {
			e.Err(err).Str("rule", b.Rule).Msg("dhcp6: boot rule template failed: no boot URL")
		})
	case !ok:
		s.Counters.NoArch.Add(1)
		r.noBoot = true
		s.logLimited(zerolog.WarnLevel, now, "noarch", func(e *zerolog.Event) {
			e.Hex("duid", r.duid).Str("vendor_class", c.VendorClass).Interface("arch", c.Arch).Bool("ipxe", c.IPXE).
				Msg("dhcp6: no boot rule for this client architecture (set dhcp6.default_arch for firmware that sends none): not answered")
		})
	case b.File == "", c.IPXE && isIPXEBinary(b.File), c.HTTPClient && !b.IsURL():
		// Nothing, or what would loop (iPXE given iPXE) or what HTTP
		// Boot cannot load (docs/protocols.md §9.8, §9.9).
	case !b.IsURL() && !host.IsValid():
		s.logLimited(zerolog.WarnLevel, now, "nohost", func(e *zerolog.Event) {
			e.Str("file", b.File).Msg("dhcp6: no address of ours inside the prefix on this link for a tftp:// URL (set dhcp6.tftp_server): no boot URL")
		})
	default:
		r.boot = bootURL(b.File, host)
	}
}

// logLimited logs one line per kind per limitEvery (mu held).
func (s *Server6) logLimited(lvl zerolog.Level, now time.Time, kind string, log func(*zerolog.Event)) {
	if ok, n := s.limit.allow(kind, now); ok {
		log(s.Log.WithLevel(lvl).Int("suppressed", n))
	}
}

// ia is one IA_NA's answer.
type ia struct {
	id     [4]byte
	ip     netip.Addr // zero: status only
	valid  time.Duration
	status iana.StatusCode
	why    string
}

// key is the binding's client key: IAID + DUID.
func (r *req6) key(id [4]byte) (string, []byte) {
	cid := append(id[:], r.duid...)
	return clientKey(cid, nil), cid
}

// ias returns the message's IA_NAs, at most maxIAs.
func (r *req6) ias() []*dhcpv6.OptIANA {
	l := r.msg.Options.IANA()
	return l[:min(len(l), maxIAs)]
}

// solicit answers with an Advertise that reserves an address per IA_NA
// for OfferHold, or, with Rapid Commit on both sides, a Reply that
// commits it (RFC 8415 §18.3.1).
func (s *Server6) solicit(r *req6, now time.Time) ([]byte, uint64) {
	rapid := s.RapidCommit && r.msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil
	if s.decideBoot(r, netip.Addr{}, now); r.noBoot {
		return nil, 0 // before any address is reserved for it
	}
	if rapid && !s.allowRapid(r, now) {
		rapid = false
		s.Counters.RapidLimited.Add(1)
	}
	var out []ia
	for _, o := range r.ias() {
		key, cid := r.key(o.IaId)
		b := s.leases.byKey[key]
		ip, ok := s.address(r, b, o, now)
		if !ok {
			out = append(out, ia{id: o.IaId, status: iana.StatusNoAddrsAvail, why: "no address available"})
			s.Counters.NoAddrsAvail.Add(1)
			continue
		}
		if b == nil {
			b = s.leases.create(key, cid, r.mac)
		}
		s.leases.setIP(b, ip)
		if rapid {
			s.commit(r, b, now)
		} else {
			b.offerUntil = now.Add(OfferHold)
			s.leases.touch(b)
		}
		out = append(out, ia{id: o.IaId, ip: ip, valid: s.lease})
	}
	first := firstAddr(out)
	s.decideBoot(r, first, now) // again, for {{.IP}}
	mt := dhcpv6.MessageTypeAdvertise
	var seq uint64
	if rapid && first.IsValid() {
		mt, seq = dhcpv6.MessageTypeReply, s.leases.seq
	}
	return s.reply(r, mt, out, rapid && first.IsValid()), seq
}

// allowRapid takes a token of the receiving interface's bucket for each
// of r's IAs that has no binding yet (mu held): only new IAs cost, a
// client that Solicits again for what it holds does not.
func (s *Server6) allowRapid(r *req6, now time.Time) bool {
	n := 0
	for _, o := range r.ias() {
		if key, _ := r.key(o.IaId); s.leases.byKey[key] == nil {
			n++
		}
	}
	if n == 0 {
		return true
	}
	if s.rapid == nil {
		s.rapid = make(map[int]*tokenBucket)
	}
	b := s.rapid[r.in.IfIndex] // IfIndex comes from the kernel: one entry per served link
	if b == nil {
		b = &tokenBucket{tokens: rapidBurst, last: now}
		s.rapid[r.in.IfIndex] = b
	}
	return b.take(n, rapidRate, rapidBurst, now)
}

// tokenBucket holds up to burst tokens, refilled at rate a second.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// take removes n tokens if there are as many.
func (b *tokenBucket) take(n int, rate, burst float64, now time.Time) bool {
	if d := now.Sub(b.last); d > 0 { // a clock that steps back adds nothing
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

func firstAddr(l []ia) netip.Addr {
	for _, a := range l {
		if a.ip.IsValid() {
			return a.ip
		}
	}
	return netip.Addr{}
}

// address picks the address for IA o of binding b (nil: a new client):
// the one it holds or was offered, else one it asks for that is free,
// else one from the pool, else a stale offer's. ok is false when the
// pool is full or the DUID holds MaxPerDUID IAs already.
func (s *Server6) address(r *req6, b *binding, o *dhcpv6.OptIANA, now time.Time) (netip.Addr, bool) {
	_, cid := r.key(o.IaId)
	if b != nil && b.ip.IsValid() && s.free(b.ip, r.in.IfAddr, b, now) {
		return b.ip, true
	}
	if (b == nil || !b.reserved(now)) && s.overDUIDLimit(r, cid, b, now) {
		return netip.Addr{}, false
	}
	for _, a := range o.Options.Addresses() {
		if ip, ok := netip.AddrFromSlice(a.IPv6Addr); ok && s.free(ip, r.in.IfAddr, b, now) {
			return ip, true
		}
	}
	p := s.leases.pools[0]
	if ip, ok := s.leases.pick(p, r.in.IfAddr, func(ip netip.Addr) bool { return s.free(ip, r.in.IfAddr, b, now) }, now); ok {
		return ip, true
	}
	ip, pending := s.leases.staleOffer(p, now)
	if !ip.IsValid() {
		s.logLimited(zerolog.ErrorLevel, now, "pool", func(e *zerolog.Event) {
			e.Stringer("range_start", s.RangeStart).Stringer("range_end", s.RangeEnd).Int("pending_offers", pending).
				Msg("dhcp6: address pool exhausted: NoAddrsAvail (widen the range or shorten lease_time)")
		})
		return netip.Addr{}, false
	}
	s.leases.remove(s.leases.byIP[ip])
	s.Counters.OffersReclaim.Add(1)
	s.logLimited(zerolog.WarnLevel, now, "reclaim", func(e *zerolog.Event) {
		e.Int("pending_offers", pending).Stringer("ip", ip).
			Msg("dhcp6: pool full of Advertised addresses nobody Requested (a Solicit flood with random DUIDs?): the oldest is reclaimed")
	})
	return ip, true
}

// overDUIDLimit reports (counts and logs) an IA that would be one more
// than MaxPerDUID holding addresses under one DUID.
func (s *Server6) overDUIDLimit(r *req6, cid []byte, self *binding, now time.Time) bool {
	limit, over := s.leases.atLimit(duidOwner(cid), self, s.MaxPerDUID, DefaultMaxPerDUID, now)
	if !over {
		return false
	}
	s.Counters.DUIDLimited.Add(1)
	s.logLimited(zerolog.WarnLevel, now, "duid-limit", func(e *zerolog.Event) {
		e.Hex("duid", r.duid).Int("max_per_duid", limit).Msg("dhcp6: too many IAs of one DUID hold addresses: NoAddrsAvail (IAID flood?)")
	})
	return true
}

// free reports whether ip may go to binding self (nil: a new client):
// in the range, not the server's (TFTPServer, or own: the receiving
// interface's address), not quarantined, not reserved by another
// binding.
func (s *Server6) free(ip, own netip.Addr, self *binding, now time.Time) bool {
	p := s.leases.pools[0]
	if !p.poolable(ip) || ip == s.TFTPServer || ip == own {
		return false
	}
	if until, ok := s.leases.declined[ip]; ok && until.After(now) {
		return false
	}
	o := s.leases.holder(ip, now)
	return o == nil || o == self
}

// commit makes b's lease run from now (mu held); the caller waits for
// s.leases.seq.
func (s *Server6) commit(r *req6, b *binding, now time.Time) {
	b.start, b.expiry, b.offerUntil = now, now.Add(s.lease), time.Time{}
	s.leases.touch(b)
	b.arch = ""
	if a, ok := r.client.PrimaryArch(); ok {
		b.arch = strconv.Itoa(int(a))
	}
	s.leases.mark(b.ip)
	s.leases.seq++
}

// bind answers Request, Renew and Rebind (RFC 8415 §18.3.2, .4, .5):
// each IA gets its address committed (or extended), NoAddrsAvail
// (Request: nothing free, or an IA we did not Advertise), NoBinding
// (Renew: unknown), or — for an
// address the client names that it may not have — that address with
// lifetimes 0.
func (s *Server6) bind(r *req6, now time.Time) ([]byte, uint64) {
	mt := r.msg.MessageType
	if s.decideBoot(r, netip.Addr{}, now); r.noBoot {
		return nil, 0 // before any address is committed for it
	}
	var out []ia
	var seq uint64
	for _, o := range r.ias() {
		key, cid := r.key(o.IaId)
		b := s.leases.byKey[key]
		if mt != dhcpv6.MessageTypeRequest && (b == nil || !b.ip.IsValid()) && len(o.Options.Addresses()) == 0 {
			out = append(out, ia{id: o.IaId, status: iana.StatusNoBinding, why: "no binding for this IA"})
			continue
		}
		var ip netip.Addr
		var ok bool
		if mt == dhcpv6.MessageTypeRequest && (b == nil || !b.ip.IsValid()) {
			// Not Advertised by us to this DUID and IAID (or long
			// enough ago that the offer was dropped): a Request
			// straight away would commit an hour's binding per
			// forged IA with no Solicit bound in the way
			// (docs/security.md). NoAddrsAvail sends the client back
			// to Solicit (RFC 8415 §18.2.10.1).
			s.Counters.NotAdvertised.Add(1)
		} else if mt == dhcpv6.MessageTypeRequest {
			ip, ok = s.address(r, b, o, now)
		} else if b != nil && b.ip.IsValid() && s.free(b.ip, r.in.IfAddr, b, now) {
			ip, ok = b.ip, true
		}
		if !ok {
			out = append(out, s.refuse(r, o, b, mt)...)
			continue
		}
		if b == nil {
			b = s.leases.create(key, cid, r.mac)
		}
		s.leases.setIP(b, ip)
		s.commit(r, b, now)
		seq = s.leases.seq
		out = append(out, ia{id: o.IaId, ip: ip, valid: s.lease})
	}
	s.decideBoot(r, firstAddr(out), now) // again, for {{.IP}}
	return s.reply(r, dhcpv6.MessageTypeReply, out, false), seq
}

// refuse is an IA that gets no address: NoAddrsAvail for a Request;
// for a Renew or Rebind, the addresses it named with lifetimes 0 (they
// are not its to use, RFC 8415 §18.3.4), or NoBinding.
func (s *Server6) refuse(r *req6, o *dhcpv6.OptIANA, b *binding, mt dhcpv6.MessageType) []ia {
	if mt == dhcpv6.MessageTypeRequest {
		s.Counters.NoAddrsAvail.Add(1)
		return []ia{{id: o.IaId, status: iana.StatusNoAddrsAvail, why: "no address available"}}
	}
	var out []ia
	for _, a := range o.Options.Addresses() {
		if ip, ok := netip.AddrFromSlice(a.IPv6Addr); ok && len(out) < maxIAs {
			out = append(out, ia{id: o.IaId, ip: ip})
		}
	}
	if len(out) == 0 {
		out = append(out, ia{id: o.IaId, status: iana.StatusNoBinding, why: "no binding for this IA"})
	}
	return out
}

// release ends (Release) or quarantines (Decline) the addresses the
// client's IAs hold (RFC 8415 §18.3.7, §18.3.8), and says Success.
// A Release does not wait for the disk (as DHCPv4's RELEASE); a Decline
// does.
func (s *Server6) release(r *req6, now time.Time) ([]byte, uint64) {
	var seq uint64
	for _, o := range r.ias() {
		key, _ := r.key(o.IaId)
		b := s.leases.byKey[key]
		if b == nil || !b.ip.IsValid() || s.leases.byIP[b.ip] != b {
			continue
		}
		if r.msg.MessageType == dhcpv6.MessageTypeDecline {
			ip := b.ip
			s.leases.quarantine(ip, now.Add(DeclineHold))
			s.leases.remove(b)
			s.leases.journalQuarantine(ip, now.Add(DeclineHold))
			s.leases.seq++
			seq = s.leases.seq
			continue
		}
		if b.expiry.After(now) {
			b.expiry = now
		}
		b.offerUntil = time.Time{}
		s.leases.touch(b)
		s.leases.mark(b.ip)
	}
	m := s.newReply(r, dhcpv6.MessageTypeReply)
	m.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess})
	return s.finish(r, m, nil), seq
}

// confirm says whether the client's addresses are on this link
// (RFC 8415 §18.3.3); a Confirm naming none gets no answer.
func (s *Server6) confirm(r *req6) []byte {
	n, onLink := 0, true
	for _, o := range r.ias() {
		for _, a := range o.Options.Addresses() {
			ip, ok := netip.AddrFromSlice(a.IPv6Addr)
			n++
			onLink = onLink && ok && s.Prefix.Contains(ip)
		}
	}
	if n == 0 {
		s.Counters.Ignored.Add(1)
		return nil
	}
	m := s.newReply(r, dhcpv6.MessageTypeReply)
	if onLink {
		m.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess})
	} else {
		m.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNotOnLink, StatusMessage: "not on this link"})
	}
	return s.finish(r, m, nil)
}

// info answers an Information-request: configuration, no address
// (RFC 8415 §18.3.6), the boot URL to a netboot client.
func (s *Server6) info(r *req6) []byte {
	s.decideBoot(r, netip.Addr{}, s.leases.now)
	if r.noBoot {
		return nil
	}
	m := s.newReply(r, dhcpv6.MessageTypeReply)
	return s.finish(r, m, s.optional(r))
}

// newReply starts an answer: the transaction id, our DUID, the client's.
func (s *Server6) newReply(r *req6, mt dhcpv6.MessageType) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: mt, TransactionID: r.msg.TransactionID}
	m.AddOption(&rawOpt{code: dhcpv6.OptionServerID, data: s.duid})
	if r.duid != nil {
		m.AddOption(&rawOpt{code: dhcpv6.OptionClientID, data: r.duid})
	}
	return m
}

// reply builds an Advertise or Reply carrying IAs.
func (s *Server6) reply(r *req6, mt dhcpv6.MessageType, out []ia, rapid bool) []byte {
	m := s.newReply(r, mt)
	if rapid {
		m.AddOption(&rawOpt{code: dhcpv6.OptionRapidCommit})
	}
	if mt == dhcpv6.MessageTypeAdvertise {
		// Preference 255: the client need not wait for other
		// Advertises (RFC 8415 §18.2.9): firmware boots a second sooner.
		m.AddOption(dhcpv6.OptPreference(255))
	}
	for i := 0; i < len(out); {
		o := &dhcpv6.OptIANA{IaId: out[i].id}
		for ; i < len(out) && out[i].id == o.IaId; i++ {
			a := out[i]
			if !a.ip.IsValid() {
				o.Options.Add(&dhcpv6.OptStatusCode{StatusCode: a.status, StatusMessage: a.why})
				continue
			}
			o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.ip.AsSlice(), PreferredLifetime: a.valid, ValidLifetime: a.valid})
			if a.valid > 0 {
				o.T1, o.T2 = a.valid/2, a.valid*4/5
			}
		}
		m.AddOption(o)
	}
	if len(out) == 0 {
		m.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "no IA_NA asked for"})
	}
	if e := s.Log.Debug(); e.Enabled() {
		e.Stringer("type", mt).Hex("duid", r.duid).Stringer("src", r.in.Src.Addr()).Interface("arch", r.client.Arch).
			Bool("arch_option", len(r.msg.Options.ArchTypes()) > 0).Str("vendor_class", r.client.VendorClass).
			Strs("user_class", r.client.UserClass).Stringer("ip", firstAddr(out)).Str("boot_url", r.boot).Msg("dhcp6: answer")
	}
	return s.finish(r, m, s.optional(r))
}

// optional is what the client asked for that we have: the boot URL
// and DNS servers.
func (s *Server6) optional(r *req6) []dhcpv6.Option {
	var opts []dhcpv6.Option
	if r.boot != "" {
		opts = append(opts, dhcpv6.OptBootFileURL(r.boot))
	}
	if len(s.DNS) > 0 && r.msg.IsOptionRequested(dhcpv6.OptionDNSRecursiveNameServer) {
		var ips []net.IP
		for _, a := range s.DNS {
			ips = append(ips, a.AsSlice())
		}
		opts = append(opts, dhcpv6.OptDNS(ips...))
	}
	return opts
}

// finish adds the optional options and encodes m, within replyFactor
// times the request (replyFloor at least): without the optional ones if
// they do not fit, nothing if even that does not.
func (s *Server6) finish(r *req6, m *dhcpv6.Message, optional []dhcpv6.Option) []byte {
	limit := max(replyFactor*r.size, replyFloor)
	base := m.ToBytes()
	for _, o := range optional {
		m.AddOption(o)
	}
	b := m.ToBytes()
	if len(b) > limit {
		b = base
	}
	if len(b) > limit {
		s.Counters.Oversize.Add(1)
		return nil
	}
	if len(b) > len(base) && r.boot != "" {
		s.Counters.BootURL.Add(1)
	}
	return b
}

// rawOpt is an option whose bytes we hold as they are (DUIDs: the
// library would re-encode them through its DUID types).
type rawOpt struct {
	code dhcpv6.OptionCode
	data []byte
}

func (o *rawOpt) Code() dhcpv6.OptionCode     { return o.code }
func (o *rawOpt) ToBytes() []byte             { return o.data }
func (o *rawOpt) String() string              { return o.code.String() }
func (o *rawOpt) FromBytes(data []byte) error { o.data = data; return nil }
