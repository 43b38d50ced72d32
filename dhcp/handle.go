package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// Incoming says where a request came from.
type Incoming struct {
	IfIndex int            // receiving interface
	IfAddr  netip.Addr     // our address on it: server identifier (54), default siaddr and mirror
	Src     netip.AddrPort // the datagram's source
	Port    int            // PortServer or PortProxy: the socket's role
}

// Outgoing is a reply and where it goes.
type Outgoing struct {
	Pkt     *dhcpv4.DHCPv4
	Dst     netip.AddrPort
	IfIndex int // set for 255.255.255.255: the interface to broadcast on

	wire  []byte         // Pkt encoded, padded and size-checked
	count *atomic.Uint64 // the reply's counter, bumped when it is released
	arch  *atomic.Uint64 // and its by-architecture cell (Counters.ByArch)
	// kick: a change Serve starts writing once out is sent, without
	// holding out for it (an OFFER's promise, promise.go)
	kick uint64
}

// released counts a reply that leaves: sent by Serve or returned by
// Handle (an ACK only once its lease is durable).
func (o *Outgoing) released() {
	if o != nil && o.count != nil {
		o.count.Add(1)
	}
	if o != nil && o.arch != nil {
		o.arch.Add(1)
	}
}

// Bytes returns the encoded reply (≥ 300 bytes, within the client's
// maximum message size).
func (o *Outgoing) Bytes() []byte { return o.wire }

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Reply size limits (docs/protocols.md §8.5). RFC 2131 §2 guarantees a client
// takes an options field of 312 bytes: a 548-byte message, 576 with the IP
// and UDP headers. Option 57 (RFC 2132 §9.10, counted with the headers, as
// dnsmasq does) may raise it, up to one 1500-byte Ethernet frame.
const (
	minReplySize = 548
	maxReplySize = 1500 - 28
	ipUDPHeaders = 28
)

// Handle answers one request: the protocol core, without sockets. now
// dates leases and offers. It returns nil, nil when the request gets no
// reply. With LeaseFile set, a reply that commits a lease (ACK) — and a
// DECLINE — returns only once the lease journal holding the change is on
// disk (concurrent callers share writes; a RELEASE goes out with the next
// write); if that write fails, the reply is withheld and the error
// returned. The first call validates the configuration and loads the
// lease file. Safe for concurrent use.
func (s *Server) Handle(req *dhcpv4.DHCPv4, in Incoming, now time.Time) (*Outgoing, error) {
	if err := s.setup(); err != nil {
		return nil, err
	}
	out, seq := s.handle(req, in, now)
	if err := s.durable(seq); err != nil {
		return nil, err
	}
	out.released()
	return out, nil
}

// handle is Handle without the wait for the disk: seq > 0 names the lease
// change that must be durable before out may be sent.
func (s *Server) handle(req *dhcpv4.DHCPv4, in Incoming, now time.Time) (*Outgoing, uint64) {
	if req == nil || req.OpCode != dhcpv4.OpcodeBootRequest ||
		(len(req.ClientHWAddr) == 0 && len(req.Options[optClientID]) == 0) {
		s.Counters.BadPacket.Add(1)
		return nil, 0
	}
	mt := req.MessageType()
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		s.Counters.Discover.Add(1)
	case dhcpv4.MessageTypeRequest:
		s.Counters.Request.Add(1)
	case dhcpv4.MessageTypeDecline:
		s.Counters.Decline.Add(1)
	case dhcpv4.MessageTypeRelease:
		s.Counters.Release.Add(1)
	case dhcpv4.MessageTypeInform:
		s.Counters.Inform.Add(1)
	default: // BOOTP (no 53), and server messages seen on the broadcast domain
		s.Counters.Ignored.Add(1)
		return nil, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases.now = now
	if gi := addrOf(req.GatewayIPAddr); isSet(gi) && !s.fromRelay(gi, in.Src.Addr()) {
		s.Counters.RelayRefused.Add(1)
		s.logLimited(zerolog.WarnLevel, now, "relay", func(e *zerolog.Event) {
			e.Stringer("giaddr", gi).Stringer("src", in.Src).Stringer("mac", req.ClientHWAddr).
				Msg("dhcp: relayed request from an address not in dhcp.relays: not answered (a host claiming to be a relay?)")
		})
		return nil, 0
	}
	if !in.IfAddr.Is4() {
		// No address on the receiving interface: no server identifier.
		s.ignore(now, "no-ifaddr", func(e *zerolog.Event) {
			e.Int("ifindex", in.IfIndex).Msg("dhcp: request on an interface without an IPv4 address ignored")
		})
		return nil, 0
	}
	if s.mode == ModeProxy {
		return s.proxy(req, mt, in), 0
	}
	s.leases.sweep(now)
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(req, in, now), 0
	case dhcpv4.MessageTypeRequest:
		return s.request(req, in, now)
	case dhcpv4.MessageTypeDecline:
		return nil, s.decline(req, in, now)
	case dhcpv4.MessageTypeRelease:
		return nil, s.release(req, in, now)
	default:
		return s.inform(req, in, now), 0
	}
}

// fromRelay reports whether a request with giaddr gi, received from src,
// comes from a configured relay agent.
func (s *Server) fromRelay(gi, src netip.Addr) bool {
	in := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range s.Relays {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return isSet(src) && in(gi) && in(src)
}

// ignore counts an unanswered request and logs why, rate-limited.
func (s *Server) ignore(now time.Time, kind string, log func(*zerolog.Event)) {
	s.Counters.Ignored.Add(1)
	s.logLimited(zerolog.WarnLevel, now, kind, log)
}

func (s *Server) logLimited(lvl zerolog.Level, now time.Time, kind string, log func(*zerolog.Event)) {
	if ok, n := s.limit.allow(kind, now); ok {
		log(s.Log.WithLevel(lvl).Int("suppressed", n))
	}
}

// request parsing helpers

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.IPv4Unspecified()
	}
	return a
}

func isSet(a netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() }

func optAddr(req *dhcpv4.DHCPv4, code uint8) netip.Addr {
	if v := req.Options[code]; len(v) == 4 {
		return netip.AddrFrom4([4]byte(v))
	}
	return netip.Addr{}
}

func requested(req *dhcpv4.DHCPv4, code uint8) bool {
	for _, c := range req.Options[optParamRequest] {
		if c == code {
			return true
		}
	}
	return false
}

// subnetFor picks the subnet: by giaddr for relayed requests, else by the
// address of the receiving interface (docs/protocols.md §8.5). With byClient,
// an unrelayed request whose ciaddr lies in one of our subnets (a RENEW
// routed to us, an INFORM) uses that one.
func (s *Server) subnetFor(req *dhcpv4.DHCPv4, in Incoming, byClient bool) *subnet {
	if gi := addrOf(req.GatewayIPAddr); isSet(gi) {
		return s.subnetOf(gi)
	}
	if ci := addrOf(req.ClientIPAddr); byClient && isSet(ci) {
		if sub := s.subnetOf(ci); sub != nil {
			return sub
		}
	}
	return s.subnetOf(in.IfAddr)
}

func (s *Server) noSubnet(req *dhcpv4.DHCPv4, in Incoming, now time.Time) {
	s.ignore(now, "no-subnet", func(e *zerolog.Event) {
		e.Stringer("giaddr", addrOf(req.GatewayIPAddr)).Stringer("ifaddr", in.IfAddr).
			Msg("dhcp: request from a network with no configured subnet ignored")
	})
}

// client is the identity of the sender of a request.
type client struct {
	key  string
	id   []byte
	mac  net.HardwareAddr
	host *host // static host by MAC, or nil
}

func (s *Server) clientOf(req *dhcpv4.DHCPv4) client {
	id := req.Options[optClientID]
	return client{key: clientKey(id, req.ClientHWAddr), id: id, mac: req.ClientHWAddr, host: s.hostByMAC[string(req.ClientHWAddr)]}
}

func (c client) staticIP() (netip.Addr, bool) {
	if c.host != nil && c.host.IP.IsValid() {
		return c.host.IP, true
	}
	return netip.Addr{}, false
}

// discover answers DHCPDISCOVER with an OFFER: the client's current or
// previous address, else the one it asks for (50) if free, else one from
// the pool; a static host always gets its own. The address stays reserved
// for OfferHold (docs/protocols.md §8.3).
func (s *Server) discover(req *dhcpv4.DHCPv4, in Incoming, now time.Time) *Outgoing {
	sub := s.subnetFor(req, in, false)
	if sub == nil {
		s.noSubnet(req, in, now)
		return nil
	}
	cl := s.clientOf(req)
	rec := s.leases.lookup(cl.key, cl.id, cl.mac, now)
	if s.overMACLimit(cl, rec, now) {
		return nil
	}
	var ip netip.Addr
	if sip, ok := cl.staticIP(); ok {
		if !sub.Prefix.Contains(sip) {
			s.ignore(now, "static-elsewhere", func(e *zerolog.Event) {
				e.Stringer("mac", cl.mac).Stringer("ip", sip).Stringer("subnet", sub.Prefix).
					Msg("dhcp: static host asked from another subnet: ignored")
			})
			return nil
		}
		ip = sip
	} else if rec != nil && rec.ip.IsValid() && s.free(sub, rec.ip, rec, cl.mac, in, now) {
		ip = rec.ip
	} else if r := optAddr(req, optRequestedIP); r.IsValid() && s.free(sub, r, rec, cl.mac, in, now) {
		ip = r
	} else if p, ok := s.fromPool(sub, rec, cl.mac, in, now); ok {
		ip = p
	} else if p, ok := s.reclaimOffer(sub, cl, now); ok {
		ip = p
	} else {
		s.Counters.PoolExhausted.Add(1)
		s.logLimited(zerolog.ErrorLevel, now, "pool-"+sub.Prefix.String(), func(e *zerolog.Event) {
			e.Stringer("subnet", sub.Prefix).Stringer("range_start", sub.RangeStart).Stringer("range_end", sub.RangeEnd).
				Uint32("range_size", sub.end-sub.start+1).Stringer("mac", cl.mac).
				Msg("dhcp: address pool exhausted: DISCOVER not answered (widen the range or shorten LeaseTime)")
		})
		return nil
	}
	c := ClassifyClient(req)
	boot, ok := s.bootFor(req, c, cl, in, ip, now)
	if !ok {
		return nil
	}
	if rec == nil {
		rec = s.leases.create(cl.key, cl.id, cl.mac)
	}
	if h := s.leases.byIP[ip]; h != nil && h != rec && cl.host != nil {
		s.leases.remove(h) // a static address held by someone else (config changed): the host wins
	}
	s.leases.setIP(rec, ip)
	rec.offerUntil = now.Add(OfferHold)
	s.leases.touch(rec)
	var kick uint64
	if s.store != nil && !s.store.busy.Load() {
		// A quiet journal: write this offer's lease ahead (promise.go).
		// While appends run back to back, group commit already shares
		// each sync among many ACKs, and promises would only add records.
		kick = s.leases.promise(rec, rec.offerUntil.Add(sub.lease), now)
	}

	reply := newReply(req, dhcpv4.MessageTypeOffer, in.IfAddr)
	reply.YourIPAddr = ip.AsSlice()
	s.leaseOptions(reply, sub, cl, true)
	s.applyBoot(reply, req, c, boot)
	out := s.finish(reply, req, in, false)
	if out != nil {
		out.kick = kick
		out.count = &s.Counters.Offer
		out.arch = s.Counters.archCounter(replyOffer, c)
		if boot != nil {
			s.countClass(classify(c))
		}
	}
	return out
}

// request answers DHCPREQUEST in its four client states (RFC 2131 §4.3.2,
// docs/protocols.md §8.3).
func (s *Server) request(req *dhcpv4.DHCPv4, in Incoming, now time.Time) (*Outgoing, uint64) {
	cl := s.clientOf(req)
	sid := optAddr(req, optServerID)
	want := optAddr(req, optRequestedIP)
	ci := addrOf(req.ClientIPAddr)
	switch {
	case sid.IsValid(): // SELECTING
		if sid != in.IfAddr {
			// The client took another server's offer: free ours.
			if rec := s.leases.byKey[cl.key]; rec != nil && rec.offerUntil.After(now) {
				rec.offerUntil = time.Time{}
				s.leases.unpromise(rec)
				s.leases.touch(rec)
				if rec.expiry.IsZero() {
					s.leases.remove(rec)
				}
			}
			s.Counters.Ignored.Add(1)
			return nil, 0
		}
		sub := s.subnetFor(req, in, false)
		if sub == nil {
			s.noSubnet(req, in, now)
			return nil, 0
		}
		rec := s.leases.lookup(cl.key, cl.id, cl.mac, now)
		if !want.IsValid() { // 50 is a MUST here; be lenient with what we offered
			switch {
			case isSet(ci):
				want = ci
			case rec != nil && rec.offerUntil.After(now):
				want = rec.ip
			default:
				return s.nak(req, in, "no requested address"), 0
			}
		}
		return s.commit(req, in, sub, cl, rec, want, now)
	case isSet(ci): // RENEWING (unicast) or REBINDING (broadcast)
		sub := s.subnetFor(req, in, true)
		if sub == nil || !sub.Prefix.Contains(ci) {
			s.Counters.Ignored.Add(1) // not one of our networks: another server's client
			return nil, 0
		}
		rec := s.leases.lookup(cl.key, cl.id, cl.mac, now)
		_, static := cl.staticIP()
		known := s.leases.holder(ci, now) != nil || s.staticIP[ci] != nil
		if !static && !known && (rec == nil || rec.ip != ci) && !s.free(sub, ci, rec, cl.mac, in, now) {
			// No record of this lease, nobody we know holds the address,
			// and we cannot grant it (outside our range, say): it is
			// probably a split-scope partner's client. RFC 2131 §4.3.2:
			// stay silent, never NAK it away. An address we know to be
			// someone else's is still NAKed (commit).
			s.Counters.Ignored.Add(1)
			return nil, 0
		}
		return s.commit(req, in, sub, cl, rec, ci, now)
	case want.IsValid(): // INIT-REBOOT
		sub := s.subnetFor(req, in, false)
		if sub == nil {
			s.noSubnet(req, in, now)
			return nil, 0
		}
		if !sub.Prefix.Contains(want) {
			return s.nak(req, in, "wrong network"), 0
		}
		rec := s.leases.lookup(cl.key, cl.id, cl.mac, now)
		if _, static := cl.staticIP(); !static {
			if rec == nil || !rec.ip.IsValid() {
				// No record of this client: stay silent (RFC 2131
				// §4.3.2) — unless the address is someone else's.
				if s.leases.holder(want, now) != nil {
					return s.nak(req, in, "address leased to another client"), 0
				}
				s.Counters.Ignored.Add(1)
				return nil, 0
			}
			if rec.ip != want {
				return s.nak(req, in, "not the client's address"), 0
			}
		}
		return s.commit(req, in, sub, cl, rec, want, now)
	default:
		s.Counters.BadPacket.Add(1) // a REQUEST without 50, 54 or ciaddr
		return nil, 0
	}
}

// overMACLimit reports (counts and logs) a client that would be one more
// than MaxPerMAC clients holding addresses under one hardware address: a
// flood of client ids behind one MAC gets no answer. Static hosts and
// clients that already hold a record are never refused.
func (s *Server) overMACLimit(cl client, rec *binding, now time.Time) bool {
	if cl.host != nil || len(cl.mac) == 0 || (rec != nil && rec.reserved(now)) {
		return false
	}
	limit, over := s.leases.atLimit(string(cl.mac), rec, s.MaxPerMAC, DefaultMaxPerMAC, now)
	if !over {
		return false
	}
	s.Counters.MACLimited.Add(1)
	s.logLimited(zerolog.WarnLevel, now, "mac-limit", func(e *zerolog.Event) {
		e.Stringer("mac", cl.mac).Int("max_per_mac", limit).
			Msg("dhcp: too many client ids on one MAC hold addresses: request not answered (client-id flood?)")
	})
	return true
}

// reclaimOffer takes the address of the oldest offer in sub that was never
// REQUESTed within OfferGrace, for a DISCOVER that found the pool full:
// offers from a random-MAC flood then cannot starve real clients.
func (s *Server) reclaimOffer(sub *subnet, cl client, now time.Time) (netip.Addr, bool) {
	ip, pending := s.leases.staleOffer(s.leases.pools[sub.idx], now)
	if !ip.IsValid() {
		return ip, false
	}
	s.leases.remove(s.leases.byIP[ip])
	s.Counters.OffersReclaimed.Add(1)
	s.logLimited(zerolog.WarnLevel, now, "reclaim-"+sub.Prefix.String(), func(e *zerolog.Event) {
		e.Stringer("subnet", sub.Prefix).Int("pending_offers", pending).Stringer("ip", ip).Stringer("mac", cl.mac).
			Msg("dhcp: pool full of offers nobody REQUESTed (a DISCOVER flood with random MACs?): the oldest is reclaimed")
	})
	return ip, true
}

// commit ACKs ip for the client if it may have it, else NAKs.
func (s *Server) commit(req *dhcpv4.DHCPv4, in Incoming, sub *subnet, cl client, rec *binding, ip netip.Addr, now time.Time) (*Outgoing, uint64) {
	if sip, ok := cl.staticIP(); ok {
		if ip != sip || !sub.Prefix.Contains(sip) {
			return s.nak(req, in, "static host asked for another address"), 0
		}
	} else if !s.free(sub, ip, rec, cl.mac, in, now) {
		reason := "address not available"
		if o := s.leases.holder(ip, now); o != nil && o != rec {
			reason = "address leased to another client"
		}
		return s.nak(req, in, reason), 0
	}
	if s.overMACLimit(cl, rec, now) {
		return nil, 0
	}
	c := ClassifyClient(req)
	boot, ok := s.bootFor(req, c, cl, in, ip, now)
	if !ok {
		return nil, 0
	}
	if rec == nil {
		rec = s.leases.create(cl.key, cl.id, cl.mac)
	}
	if h := s.leases.byIP[ip]; h != nil && h != rec && cl.host != nil {
		s.leases.remove(h)
	}
	expiry := now.Add(sub.lease)
	promised := rec.promiseFor(ip, expiry)
	s.leases.unpromise(rec)
	s.leases.setIP(rec, ip)
	rec.start, rec.expiry, rec.offerUntil = now, expiry, time.Time{}
	rec.static = cl.host != nil && cl.host.IP.IsValid()
	s.leases.touch(rec)
	rec.arch = ""
	if a, ok := c.PrimaryArch(); ok {
		rec.arch = strconv.Itoa(int(a))
	}
	rec.hostname = req.HostName()
	if cl.host != nil && cl.host.Hostname != "" {
		rec.hostname = cl.host.Hostname
	}
	s.leases.mark(ip)
	s.leases.seq++
	// The ACK waits for the promise if one covers it (usually written
	// while the OFFER travelled), else for this change; either way the
	// lease is on disk before the ACK leaves. This record rides the next
	// append.
	wait := s.leases.seq
	if promised != 0 {
		wait = promised
	}

	reply := newReply(req, dhcpv4.MessageTypeAck, in.IfAddr)
	reply.ClientIPAddr = req.ClientIPAddr
	reply.YourIPAddr = ip.AsSlice()
	s.leaseOptions(reply, sub, cl, true)
	s.applyBoot(reply, req, c, boot)
	out := s.finish(reply, req, in, false)
	if out != nil {
		out.count = &s.Counters.Ack
		out.arch = s.Counters.archCounter(replyAck, c)
	}
	return out, wait
}

// nak builds a DHCPNAK: yiaddr 0, no lease options, broadcast — or to the
// relay with the BROADCAST bit set (RFC 2131 §4.1, §4.3.2).
func (s *Server) nak(req *dhcpv4.DHCPv4, in Incoming, why string) *Outgoing {
	reply := newReply(req, dhcpv4.MessageTypeNak, in.IfAddr)
	reply.Options[56] = []byte(why) // option 56, Message (RFC 2132 §9.9)
	out := s.finish(reply, req, in, true)
	if out != nil {
		out.count = &s.Counters.Nak
		out.arch = s.Counters.archCounter(replyNak, ClassifyClient(req))
		s.Log.Debug().Stringer("mac", req.ClientHWAddr).Str("reason", why).Msg("dhcp: NAK")
	}
	return out
}

// decline quarantines an address the client found in use (RFC 2131
// §4.3.3); only the client that holds it can.
func (s *Server) decline(req *dhcpv4.DHCPv4, in Incoming, now time.Time) uint64 {
	ip := optAddr(req, optRequestedIP)
	cl, rec := s.holding(req, in, ip, now)
	if rec == nil {
		return 0
	}
	s.leases.quarantine(ip, now.Add(DeclineHold))
	s.leases.remove(rec) // it holds nothing now: a new client next time
	s.leases.journalQuarantine(ip, now.Add(DeclineHold))
	s.leases.seq++
	s.logLimited(zerolog.WarnLevel, now, "decline", func(e *zerolog.Event) {
		e.Stringer("ip", ip).Stringer("mac", cl.mac).Dur("quarantine", DeclineHold).
			Msg("dhcp: DHCPDECLINE: another host uses this address; quarantined")
	})
	return s.leases.seq
}

// holding returns the sender's record if it holds ip and the message is
// for us (option 54 absent or ours); otherwise nil, counted as ignored.
// DECLINE and RELEASE act only on the sender's own binding.
func (s *Server) holding(req *dhcpv4.DHCPv4, in Incoming, ip netip.Addr, now time.Time) (client, *binding) {
	cl := s.clientOf(req)
	if sid := optAddr(req, optServerID); !ip.IsValid() || (sid.IsValid() && sid != in.IfAddr) {
		s.Counters.Ignored.Add(1)
		return cl, nil
	}
	rec := s.leases.lookup(cl.key, cl.id, cl.mac, now)
	if rec == nil || rec.ip != ip || s.leases.byIP[ip] != rec {
		s.Counters.Ignored.Add(1)
		return cl, nil
	}
	return cl, rec
}

// release ends the client's lease now; the record stays as its previous
// binding, so it gets the same address back if nobody took it. Nothing
// waits for it to be on disk (it returns 0): RELEASE has no reply, and
// a release lost in a power cut leaves the address leased to the same
// client until it expires — no one else gets it. The change rides on
// the next append (docs/dhcp-leases.md).
func (s *Server) release(req *dhcpv4.DHCPv4, in Incoming, now time.Time) uint64 {
	_, rec := s.holding(req, in, addrOf(req.ClientIPAddr), now)
	if rec == nil {
		return 0
	}
	if rec.expiry.After(now) {
		rec.expiry = now
	}
	rec.offerUntil = time.Time{}
	s.leases.unpromise(rec) // released: no ACK may rely on it, and the journal must not keep it
	s.leases.touch(rec)
	s.leases.mark(rec.ip)
	return 0
}

// inform answers DHCPINFORM: configuration without an address or lease
// times (RFC 2131 §4.3.5). The answer goes to the relay, or else to the
// datagram's source address, which must be ciaddr (when set): a 300-byte
// ACK never goes to an address that did not ask, so INFORMs with forged
// ciaddrs cannot aim them at a victim.
func (s *Server) inform(req *dhcpv4.DHCPv4, in Incoming, now time.Time) *Outgoing {
	relayed := isSet(addrOf(req.GatewayIPAddr))
	if ci := addrOf(req.ClientIPAddr); !relayed && (!isSet(in.Src.Addr()) || in.Src.Port() == 0 || (isSet(ci) && ci != in.Src.Addr().Unmap())) {
		s.Counters.InformRefused.Add(1)
		s.logLimited(zerolog.WarnLevel, now, "inform", func(e *zerolog.Event) {
			e.Stringer("ciaddr", ci).Stringer("src", in.Src).Stringer("mac", req.ClientHWAddr).
				Msg("dhcp: INFORM whose ciaddr is not its source address: not answered")
		})
		return nil
	}
	sub := s.subnetFor(req, in, true)
	if sub == nil {
		s.noSubnet(req, in, now)
		return nil
	}
	cl := s.clientOf(req)
	c := ClassifyClient(req)
	boot, _ := s.bootFor(req, c, cl, in, addrOf(req.ClientIPAddr), now)
	reply := newReply(req, dhcpv4.MessageTypeAck, in.IfAddr)
	reply.ClientIPAddr = req.ClientIPAddr
	s.leaseOptions(reply, sub, cl, false)
	s.applyBoot(reply, req, c, boot)
	var out *Outgoing
	if relayed {
		out = s.finish(reply, req, in, false)
	} else {
		out = s.finishTo(reply, req, in.Src, 0)
	}
	if out != nil {
		out.count = &s.Counters.Ack
		out.arch = s.Counters.archCounter(replyAck, c)
	}
	return out
}

// proxy is ProxyDHCP (docs/protocols.md §9.5): DISCOVER on 67 → OFFER with
// yiaddr 0; REQUEST/INFORM on 4011 → ACK to the source. Only netboot
// clients with option 93; no addresses, no NAKs, no lease options.
func (s *Server) proxy(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, in Incoming) *Outgoing {
	now := s.leases.now
	c := ClassifyClient(req)
	if !c.Netboot() || len(req.Options[optClientArch]) < 2 {
		s.Counters.Ignored.Add(1)
		return nil
	}
	var ack bool
	switch {
	case mt == dhcpv4.MessageTypeDiscover && in.Port == PortServer:
	case (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform) && in.Port == PortProxy:
		if sid := optAddr(req, optServerID); sid.IsValid() && sid != in.IfAddr {
			s.Counters.Ignored.Add(1)
			return nil
		}
		ack = true
	default:
		s.Counters.Ignored.Add(1)
		return nil
	}
	cl := s.clientOf(req)
	ci := addrOf(req.ClientIPAddr)
	boot, ok := s.bootFor(req, c, cl, in, ci, now)
	if !ok {
		return nil
	}
	if boot == nil { // a rule with an empty File: nothing to say as a proxy
		s.Counters.Ignored.Add(1)
		return nil
	}
	var reply *dhcpv4.DHCPv4
	if !ack {
		reply = newReply(req, dhcpv4.MessageTypeOffer, in.IfAddr)
		if !isSet(ci) {
			reply.SetBroadcast()
		}
	} else {
		reply = newReply(req, dhcpv4.MessageTypeAck, in.IfAddr)
		reply.ClientIPAddr = req.ClientIPAddr
		if _, ok := pxeBootItem(req); ok {
			// A boot server ACK (PXEBS): yiaddr = ciaddr, ciaddr = 0
			// (docs/protocols.md §9.6).
			reply.YourIPAddr, reply.ClientIPAddr = req.ClientIPAddr, nil
		}
	}
	s.applyBoot(reply, req, c, boot)
	var out *Outgoing
	if ack && isSet(in.Src.Addr()) && in.Src.Port() != 0 {
		out = s.finishTo(reply, req, in.Src, 0) // 4011: back to the source (docs/protocols.md §9.5)
	} else {
		out = s.finish(reply, req, in, false)
	}
	if out == nil {
		return nil
	}
	if ack {
		out.count = &s.Counters.ProxyAck
		out.arch = s.Counters.archCounter(replyProxyAck, c)
	} else {
		out.count = &s.Counters.ProxyOffer
		out.arch = s.Counters.archCounter(replyProxyOffer, c)
		s.countClass(classify(c))
	}
	return out
}

// bootAnswer is a boot decision turned into reply fields.
type bootAnswer struct {
	Boot
	siaddr netip.Addr
}

// bootFor decides the boot file for a netboot client. It returns nil, true
// for a client that gets no boot information (not a netboot client, or a
// rule with an empty File) and nil, false when the client must get no
// answer at all (no rule matches: unknown architecture, counted).
func (s *Server) bootFor(req *dhcpv4.DHCPv4, c Client, cl client, in Incoming, ip netip.Addr, now time.Time) (*bootAnswer, bool) {
	if !c.Netboot() {
		return nil, true
	}
	v := BootVars{
		HTTP:    s.httpBase,
		MAC:     macString(req.ClientHWAddr, ':'),
		MACDash: macString(req.ClientHWAddr, '-'),
	}
	if v.HTTP == "" {
		v.HTTP = "http://" + in.IfAddr.String()
		if s.HTTPPort != 0 && s.HTTPPort != 80 {
			v.HTTP = "http://" + netip.AddrPortFrom(in.IfAddr, uint16(s.HTTPPort)).String()
		}
	}
	if isSet(ip) {
		v.IP = ip.String()
	}
	if a, ok := c.PrimaryArch(); ok {
		v.Arch = strconv.Itoa(int(a))
	}
	v.Hostname = req.HostName()
	if h := cl.host; h != nil {
		v.Vars = h.Vars
		if h.Hostname != "" {
			v.Hostname = h.Hostname
		}
	}
	b, decided, err := s.rules.decideFor(cl.host, c, v)
	if err != nil {
		s.ignore(now, "template", func(e *zerolog.Event) {
			e.Err(err).Str("rule", b.Rule).Msg("dhcp: boot rule template failed: no answer")
		})
		return nil, false
	}
	if !decided {
		s.Counters.NoArch.Add(1)
		s.logLimited(zerolog.WarnLevel, now, "noarch", func(e *zerolog.Event) {
			e.Stringer("mac", req.ClientHWAddr).Str("vendor_class", c.VendorClass).
				Interface("arch", c.Arch).Bool("ipxe", c.IPXE).
				Msg("dhcp: no boot rule for this client architecture: not answered")
		})
		return nil, false
	}
	if b.File == "" {
		return nil, true
	}
	if c.HTTPClient && !b.IsURL() {
		// EDK2 discards an HTTPClient offer whose boot file is not a URL
		// it can parse (docs/protocols.md §9.8): answering one would only
		// hide the address offer behind it. Address only, no boot answer.
		s.logLimited(zerolog.WarnLevel, now, "httpnourl", func(e *zerolog.Event) {
			e.Stringer("mac", req.ClientHWAddr).Str("rule", b.Rule).Str("file", b.File).
				Msg("dhcp: rule gives a UEFI HTTP Boot client a TFTP name, not an http(s):// URL: no boot answer")
		})
		return nil, true
	}
	if c.IPXE && isIPXEBinary(b.File) {
		// A custom rule (or host entry) would hand iPXE to iPXE, which
		// loads it and asks again: a chain-load loop that never boots.
		s.Counters.LoopRefused.Add(1)
		s.logLimited(zerolog.WarnLevel, now, "ipxeloop", func(e *zerolog.Event) {
			e.Stringer("mac", req.ClientHWAddr).Str("rule", b.Rule).Str("file", b.File).
				Msg("dhcp: rule hands an iPXE binary to iPXE (chain-load loop): no boot answer; put an ipxe = true rule first")
		})
		return nil, true
	}
	ba := &bootAnswer{Boot: b, siaddr: s.TFTPServer}
	if !ba.siaddr.IsValid() {
		ba.siaddr = in.IfAddr
	}
	if b.IsURL() {
		// siaddr = the mirror when the URL names it by address
		// (docs/protocols.md §9.8).
		if u, err := url.Parse(b.File); err == nil {
			if a, err := netip.ParseAddr(u.Hostname()); err == nil && a.Is4() {
				ba.siaddr = a
			}
		}
	}
	return ba, true
}

// isIPXEBinary reports whether a boot file name is one of iPXE's own
// loaders (Debian's ipxe package names, and the usual build targets).
func isIPXEBinary(file string) bool {
	base := strings.ToLower(path.Base(strings.SplitN(file, "?", 2)[0]))
	switch {
	case strings.HasSuffix(base, ".kpxe"), strings.HasSuffix(base, ".kkpxe"), strings.HasSuffix(base, ".lkrn"),
		base == "ipxe.efi", base == "ipxe.pxe", base == "snponly.efi", strings.HasPrefix(base, "ipxe-") && strings.HasSuffix(base, ".efi"),
		strings.HasPrefix(base, "snp") && strings.HasSuffix(base, ".efi"):
		return true
	}
	return false
}

// applyBoot writes a boot answer into a reply: siaddr and `file` always
// (PXE ROMs read them), 66/67 when asked for in 55, 67 always for HTTP Boot
// (or when the name does not fit `file`), 60 PXEClient/HTTPClient, 97 and
// for PXEClient 43 = {6: 0x08} (docs/protocols.md §9.4, §9.7, §9.8). Strings
// end in NUL for the ROMs that need it (§8.5).
func (s *Server) applyBoot(reply, req *dhcpv4.DHCPv4, c Client, b *bootAnswer) {
	if b == nil {
		if c.IPXE && s.mode == ModeServer {
			// No boot answer, so no 60 PXEClient (§9.4): iPXE would
			// wait 2 s for a ProxyDHCP offer that a server-mode link has
			// no use for; 175.176 = 1 tells it not to (§13.2).
			reply.Options[optIPXEEncap] = []byte{ipxeNoPXEDHCP, 1, 1}
		}
		return
	}
	reply.ServerIPAddr = b.siaddr.AsSlice()
	fits := len(b.File) < 128 // 128-byte field with its NUL
	if fits {
		reply.BootFileName = b.File
	}
	if requested(req, optTFTPServer) {
		reply.Options[optTFTPServer] = nul(b.siaddr.String())
	}
	if requested(req, optBootFile) || c.HTTPClient || !fits {
		reply.Options[optBootFile] = nul(b.File)
	}
	if c.HTTPClient {
		reply.Options[optVendorClass] = []byte(vendorHTTP)
	} else {
		reply.Options[optVendorClass] = []byte(vendorPXE)
		reply.Options[optVendorSpecif] = pxeVendorOptions(req, s.mtftpOptions(c, b))
	}
	if uuid, ok := req.Options[optClientUUID]; ok {
		reply.Options[optClientUUID] = uuid
	}
}

func nul(s string) []byte { return append([]byte(s), 0) }

// pxeVendorOptions is option 43 for PXEClient: the PXE MTFTP sub-options
// 1–5 when given (BIOS ROMs only: mtftpOptions), discovery control 0x08
// (boot from the file in this offer, no menu or discovery; docs/protocols.md
// §9.3), the boot item echoed for a PXEBS request, and the end marker.
func pxeVendorOptions(req *dhcpv4.DHCPv4, mtftp []byte) []byte {
	b := append(mtftp, 6, 1, 0x08)
	if item, ok := pxeBootItem(req); ok {
		b = append(b, 71, 4)
		b = append(b, item[:]...)
	}
	return append(b, 255)
}

// pxeBootItem finds sub-option 71 (type, layer) in a request's option 43.
func pxeBootItem(req *dhcpv4.DHCPv4) ([4]byte, bool) {
	v := subOption(req.Options[optVendorSpecif], 71)
	if len(v) != 4 {
		return [4]byte{}, false
	}
	return [4]byte(v), true
}

// subOption returns sub-option code of an encapsulated option (code, len,
// data …; 0 pad, 255 end).
func subOption(b []byte, code byte) []byte {
	for len(b) > 0 {
		c := b[0]
		if c == 255 {
			return nil
		}
		if c == 0 {
			b = b[1:]
			continue
		}
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return nil
		}
		n := int(b[1])
		if c == code {
			return b[2 : 2+n]
		}
		b = b[2+n:]
	}
	return nil
}

// newReply starts a reply: the request's xid, flags, giaddr and chaddr,
// option 53 and 54, and 82 and 61 echoed (RFC 3046 §2.2, RFC 6842). It is
// built directly rather than with dhcpv4.New, which draws a random xid.
func newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, serverID netip.Addr) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       make(dhcpv4.Options, 16),
	}
	r.Options[optMessageType] = []byte{byte(mt)}
	r.Options[optServerID] = serverID.AsSlice()
	if v, ok := req.Options[optRelayAgent]; ok {
		r.Options[optRelayAgent] = v
	}
	if v, ok := req.Options[optClientID]; ok {
		r.Options[optClientID] = v
	}
	return r
}

// leaseOptions adds 1, 3, 6, 12, 15 and, with lease, 51, 58, 59.
func (s *Server) leaseOptions(reply *dhcpv4.DHCPv4, sub *subnet, cl client, lease bool) {
	o := reply.Options
	o[optSubnetMask] = sub.mask
	if sub.Router.IsValid() {
		o[optRouter] = sub.Router.AsSlice()
	}
	if len(sub.DNS) > 0 {
		b := make([]byte, 0, 4*len(sub.DNS))
		for _, d := range sub.DNS {
			b = append(b, d.AsSlice()...)
		}
		o[optDNS] = b
	}
	if cl.host != nil && cl.host.Hostname != "" {
		o[optHostName] = []byte(cl.host.Hostname)
	}
	if sub.Domain != "" {
		o[optDomainName] = []byte(sub.Domain)
	}
	if lease {
		secs := uint32(sub.lease / time.Second)
		o[optLeaseTime] = be32(secs)
		o[optRenewalTime] = be32(secs / 2)                       // T1 = 0.5 × lease (RFC 2131 §4.4.5)
		o[optRebindingTime] = be32(uint32(uint64(secs) * 7 / 8)) // T2 = 0.875 × lease
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// trimOrder is what goes first when a reply exceeds the client's limit:
// the least needed for booting.
var trimOrder = []uint8{optHostName, optDomainName, optDNS, optRouter, optTFTPServer, optBootFile}

// finish picks the destination (RFC 2131 §4.1, docs/protocols.md §8.4) and
// encodes the reply within the client's size limit.
func (s *Server) finish(reply, req *dhcpv4.DHCPv4, in Incoming, isNak bool) *Outgoing {
	if gi := addrOf(req.GatewayIPAddr); isSet(gi) {
		if isNak {
			reply.SetBroadcast()
		}
		return s.finishTo(reply, req, netip.AddrPortFrom(gi, relayPort(req, in, gi)), 0)
	}
	if ci := addrOf(req.ClientIPAddr); isSet(ci) && !isNak {
		return s.finishTo(reply, req, netip.AddrPortFrom(ci, PortClient), 0)
	}
	// ciaddr 0: broadcast on the receiving interface. Unicast to yiaddr
	// would need an ARP entry for chaddr, which Go cannot inject; every
	// PXE ROM takes broadcast replies (docs/protocols.md §8.4).
	return s.finishTo(reply, req, netip.AddrPortFrom(broadcast, PortClient), in.IfIndex)
}

// relayPort is 67, or the relay's source port if it asked for that with
// the Relay Source Port sub-option (RFC 8357 §5: 82.19).
func relayPort(req *dhcpv4.DHCPv4, in Incoming, gi netip.Addr) uint16 {
	if in.Src.Addr() == gi && in.Src.Port() != 0 {
		if ri, ok := req.Options[optRelayAgent]; ok && subOption(ri, 19) != nil {
			return in.Src.Port()
		}
	}
	return PortServer
}

func (s *Server) finishTo(reply, req *dhcpv4.DHCPv4, dst netip.AddrPort, ifIndex int) *Outgoing {
	limit := replyLimit(req)
	b := reply.ToBytes()
	for _, code := range trimOrder {
		if len(b) <= limit {
			break
		}
		if _, ok := reply.Options[code]; !ok || (code == optBootFile && reply.BootFileName == "") {
			continue
		}
		delete(reply.Options, code)
		b = reply.ToBytes()
	}
	if len(b) > limit {
		s.Counters.Oversize.Add(1)
		return nil
	}
	return &Outgoing{Pkt: reply, Dst: dst, IfIndex: ifIndex, wire: b}
}

// replyLimit is the largest reply the client takes.
func replyLimit(req *dhcpv4.DHCPv4) int {
	v := req.Options[optMaxMsgSize]
	if len(v) != 2 {
		return minReplySize
	}
	return min(max(int(binary.BigEndian.Uint16(v))-ipUDPHeaders, minReplySize), maxReplySize)
}
