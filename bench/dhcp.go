package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Defaults and limits of DHCPStorm.
const (
	// DefaultDHCPTimeout bounds one exchange, first DISCOVER to ACK.
	DefaultDHCPTimeout = 10 * time.Second
	// DefaultDHCPRetransmit is the wait before a step is sent again. Real
	// clients wait 4 s and double (RFC 2131 §4.1; PXE ROMs 4, 8, 16, 32 s,
	// docs/protocols.md §9.11); a load generator that waited that long would
	// measure its own timers, so it resends after 1 s, without backoff.
	DefaultDHCPRetransmit = time.Second
	// DefaultDHCPRetries is how many times a step is resent before the
	// exchange fails: 5 sends, 5 s per step at the default Retransmit.
	DefaultDHCPRetries = 4
	// DefaultDHCPDuration caps a whole storm: it stops by itself even
	// against a server that never answers.
	DefaultDHCPDuration = 10 * time.Minute
	// MaxDHCPClients is the most clients one storm plays: their MACs
	// number them in the low 3 bytes (see ClientMAC).
	MaxDHCPClients = 1 << 20
	// maxDuplicatesListed bounds DHCPReport.Duplicates.
	maxDuplicatesListed = 20
)

// Failure causes, the keys of DHCPReport.Failures.
const (
	FailTimeoutOffer = "timeout_offer" // no OFFER after every DISCOVER, or Timeout passed waiting for one
	FailTimeoutAck   = "timeout_ack"   // no ACK or NAK after every REQUEST, or Timeout passed waiting
	FailNAK          = "nak"           // the REQUEST was NAKed (DHCPReport.NAKReasons says why)
	FailSendError    = "send_error"    // the socket refused to send
	FailCancelled    = "cancelled"     // the storm stopped (Duration, or the caller's context) mid-exchange
)

// DHCPStorm plays Clients DHCP clients against whatever server answers on
// Iface: each does DISCOVER → OFFER → REQUEST → ACK (and RELEASE with
// Release), at most Concurrency at once. Configure it through its fields;
// a zero field means the documented default. All clients share one socket
// (0.0.0.0:68, bound to Iface) and send to 255.255.255.255:67 with the
// BROADCAST flag, so servers broadcast their replies; one reader hands each
// reply to its client by xid and chaddr.
type DHCPStorm struct {
	// Iface is the interface to storm on (SO_BINDTODEVICE). Required
	// unless Transport is set: DHCP is broadcast, so the storm never
	// picks an interface by itself.
	Iface string
	// Clients is the number of simulated clients, each with its own
	// locally administered MAC (ClientMAC), 1..MaxDHCPClients.
	Clients int
	// Concurrency is how many exchanges run at once; 0 = 1, at most
	// Clients.
	Concurrency int
	// Timeout bounds one exchange, first DISCOVER to ACK; 0 =
	// DefaultDHCPTimeout.
	Timeout time.Duration
	// Release sends a DHCPRELEASE after each ACK, so a pool smaller than
	// Clients is cycled through instead of exhausted.
	Release bool
	// PXE makes the clients PXE firmware: options 60
	// "PXEClient:Arch:<Arch>:UNDI:002001", 93 Arch, 94 UNDI 2.1 and 97 a
	// GUID derived from the MAC.
	PXE bool
	// Arch is option 93, the client architecture (RFC 4578 §2.1: 0 BIOS,
	// 7 UEFI x64, 11 ARM64, ...); used only with PXE.
	Arch uint16
	// Duration caps the whole storm: no exchange starts after it, and
	// those running are cancelled; 0 = DefaultDHCPDuration.
	Duration time.Duration

	// Retransmit is the wait before a DISCOVER or REQUEST is sent again;
	// 0 = DefaultDHCPRetransmit.
	Retransmit time.Duration
	// Retries is how many times a step is resent before the exchange
	// fails; 0 = DefaultDHCPRetries.
	Retries int
	// Transport replaces the socket (tests run the state machine over an
	// in-memory one); nil opens the real one on Iface. Run closes it.
	Transport Transport
}

// Transport is a storm's one socket. Send broadcasts one datagram to the
// servers (the storm keeps no reference to b). Recv blocks for the next
// datagram for the clients and copies it into b; once Close is called it
// returns an error (blocked calls included). Send and Recv are called
// from different goroutines, Send from several at once.
type Transport interface {
	Send(b []byte) error
	Recv(b []byte) (int, error)
	Close() error
}

// DHCPReport is what a storm saw. It is plain data: it marshals to JSON
// as is (no NaN or Inf).
type DHCPReport struct {
	Iface       string    `json:"iface,omitempty"`
	Clients     int       `json:"clients"`
	Concurrency int       `json:"concurrency"`
	Release     bool      `json:"release"`
	PXE         bool      `json:"pxe"`
	Arch        uint16    `json:"arch"`
	Start       time.Time `json:"start"`
	// WallSeconds runs from the start to the end of the last exchange
	// (its RELEASE sent).
	WallSeconds float64 `json:"wall_seconds"`

	Started    int `json:"started"`     // exchanges begun
	Completed  int `json:"completed"`   // exchanges ACKed
	Failed     int `json:"failed"`      // begun and not ACKed
	NotStarted int `json:"not_started"` // never begun: the storm stopped first
	// Failures counts failed exchanges by cause (the Fail* constants).
	Failures map[string]int `json:"failures"`
	// NAKs counts DHCPNAKs taken for a REQUEST, NAKReasons the same by
	// their option 56 text ("" when the server gave none).
	NAKs       int            `json:"naks"`
	NAKReasons map[string]int `json:"nak_reasons"`
	// ExchangesPerSec is Completed over WallSeconds.
	ExchangesPerSec float64 `json:"exchanges_per_sec"`
	// LatencyMs is first DISCOVER sent → ACK received, completed
	// exchanges only.
	LatencyMs Latency `json:"latency_ms"`

	Offers      int `json:"offers"`      // OFFERs taken
	Acks        int `json:"acks"`        // ACKs taken
	Releases    int `json:"releases"`    // RELEASEs sent
	Retransmits int `json:"retransmits"` // DISCOVERs and REQUESTs sent again
	// DuplicateOffers counts OFFERs of an address another client of this
	// storm still holds (offered and not yet released or failed, or
	// ACKed); DuplicateAcks counts ACKs of an address another client holds
	// an ACK for — two live leases on one address, a server bug.
	DuplicateOffers int             `json:"duplicate_offers"`
	DuplicateAcks   int             `json:"duplicate_acks"`
	Duplicates      []DHCPDuplicate `json:"duplicates,omitempty"` // the first 20
	// StrayReplies are replies for no running exchange: late answers to a
	// retransmission after the exchange moved on, or to someone else.
	StrayReplies int `json:"stray_replies"`
	// IgnoredReplies had the right xid and chaddr but no use in that step
	// (a second OFFER while waiting for the ACK, a NAK to a DISCOVER).
	IgnoredReplies int `json:"ignored_replies"`
	// BadPackets could not be parsed as DHCP.
	BadPackets int `json:"bad_packets"`
	// ClientCPUSeconds is the CPU time (user + system) the storm's own
	// process used: a load generator that costs as much as the server it
	// measures squeezes every ratio towards 1 (docs/benchmarks.md).
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// Servers counts ACKs by server identifier (option 54): more than
	// one key means more than one server answers on the wire.
	Servers map[string]int `json:"servers"`

	// Stopped says why the storm ended before every client ran: the
	// Duration cap or the caller's context.
	Stopped string `json:"stopped,omitempty"`
	// RecvError is the socket error that stopped the reader early.
	RecvError string `json:"recv_error,omitempty"`
}

// Latency is a latency distribution in milliseconds (nearest-rank
// percentiles; all 0 without samples).
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// DHCPDuplicate is one address handed to a second client while a first
// still held it.
type DHCPDuplicate struct {
	Kind   string `json:"kind"` // "offer" or "ack"
	IP     string `json:"ip"`
	MAC    string `json:"mac"`     // the client that got it now
	HeldBy string `json:"held_by"` // the client that held it
	Acked  bool   `json:"acked"`   // HeldBy had an ACK for it (not just an OFFER)
}

// ClientMAC returns the chaddr of client i (1-based): 02:6d:74 ("mt",
// locally administered, unicast) followed by i in 3 bytes. The same i gets
// the same MAC in every storm, so a rerun against a server that kept its
// leases asks for the same clients again.
func ClientMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x6d, 0x74, byte(i >> 16), byte(i >> 8), byte(i)}
}

// config returns a copy with the defaults filled in, or every problem
// with its field's name.
func (s *DHCPStorm) config() (DHCPStorm, error) {
	c := *s
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Transport == nil && c.Iface == "" {
		bad("Iface: required (DHCP is broadcast: name the interface to storm on)")
	}
	if c.Clients < 1 || c.Clients > MaxDHCPClients {
		bad("Clients: %d, want 1..%d", c.Clients, MaxDHCPClients)
	}
	switch {
	case c.Concurrency < 0:
		bad("Concurrency: %d is negative", c.Concurrency)
	case c.Concurrency == 0:
		c.Concurrency = 1
	}
	if c.Clients > 0 && c.Concurrency > c.Clients {
		c.Concurrency = c.Clients
	}
	dur := func(name string, d *time.Duration, def time.Duration) {
		switch {
		case *d < 0:
			bad("%s: %v is negative", name, *d)
		case *d == 0:
			*d = def
		}
	}
	dur("Timeout", &c.Timeout, DefaultDHCPTimeout)
	dur("Duration", &c.Duration, DefaultDHCPDuration)
	dur("Retransmit", &c.Retransmit, DefaultDHCPRetransmit)
	switch {
	case c.Retries < 0:
		bad("Retries: %d is negative", c.Retries)
	case c.Retries == 0:
		c.Retries = DefaultDHCPRetries
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bench: invalid DHCP storm: %w", errors.Join(errs...))
	}
	return c, nil
}

// Run plays the storm and returns its report. It returns an error only
// when the storm cannot start (invalid fields, the socket cannot be
// opened); a storm cut short by Duration or ctx returns its report with
// Stopped set. Run closes the Transport.
func (s *DHCPStorm) Run(ctx context.Context) (DHCPReport, error) {
	c, err := s.config()
	if err != nil {
		if s.Transport != nil {
			s.Transport.Close()
		}
		return DHCPReport{}, err
	}
	tr := c.Transport
	if tr == nil {
		if tr, err = openDHCPTransport(ctx, c.Iface); err != nil {
			return DHCPReport{}, err
		}
	}
	r := &stormRun{c: c, tr: tr, waiting: make(map[dhcpv4.TransactionID]*exchange), held: make(map[netip.Addr]map[string]bool)}
	return r.run(ctx), nil
}

// stormRun is one Run's state.
type stormRun struct {
	c  DHCPStorm
	tr Transport

	mu        sync.Mutex // guards everything below
	waiting   map[dhcpv4.TransactionID]*exchange
	held      map[netip.Addr]map[string]bool // address → MACs holding it → ACKed
	rep       DHCPReport
	latencies []time.Duration
}

// exchange is one client's DORA.
type exchange struct {
	mac     net.HardwareAddr
	xid     dhcpv4.TransactionID
	replies chan *dhcpv4.DHCPv4 // from the reader; full = dropped
	start   time.Time
	ip      netip.Addr // the address it holds in stormRun.held
}

// repliesQueued bounds the replies waiting for one exchange: a server
// answers each of at most Retries+1 sends once, and a full queue drops.
const repliesQueued = 8

func (r *stormRun) run(ctx context.Context) DHCPReport {
	c := r.c
	r.rep = DHCPReport{
		Iface: c.Iface, Clients: c.Clients, Concurrency: c.Concurrency, Release: c.Release,
		PXE: c.PXE, Arch: c.Arch, Failures: map[string]int{}, NAKReasons: map[string]int{},
		Servers: map[string]int{},
	}
	runCtx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()

	var closing atomic.Bool
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		r.readLoop(&closing)
	}()

	start := time.Now()
	cpu0 := processCPU()
	var next atomic.Int64
	var workers sync.WaitGroup
	for range c.Concurrency {
		workers.Go(func() {
			for runCtx.Err() == nil {
				i := int(next.Add(1))
				if i > c.Clients {
					return
				}
				r.exchange(runCtx, i)
			}
		})
	}
	workers.Wait()
	wall := time.Since(start)
	cpu := processCPU() - cpu0
	closing.Store(true)
	r.tr.Close()
	<-readerDone

	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.rep
	rep.Start = start
	rep.WallSeconds = wall.Seconds()
	rep.ClientCPUSeconds = cpu
	rep.NotStarted = c.Clients - rep.Started
	if rep.WallSeconds > 0 {
		rep.ExchangesPerSec = float64(rep.Completed) / rep.WallSeconds
	}
	rep.LatencyMs = latencyOf(r.latencies)
	if rep.NotStarted > 0 || rep.Failures[FailCancelled] > 0 {
		if err := ctx.Err(); err != nil {
			rep.Stopped = "cancelled: " + err.Error()
		} else {
			rep.Stopped = fmt.Sprintf("duration %v reached", c.Duration)
		}
	}
	return rep
}

// readLoop hands every reply to its exchange until the transport is
// closed; it is the only reader of the socket.
func (r *stormRun) readLoop(closing *atomic.Bool) {
	buf := make([]byte, 4096) // any DHCP datagram; replies are ≤ 1500 bytes
	for {
		n, err := r.tr.Recv(buf)
		if err != nil {
			if !closing.Load() {
				r.mu.Lock()
				r.rep.RecvError = err.Error()
				r.mu.Unlock()
			}
			return
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || n >= len(buf) {
			r.mu.Lock()
			r.rep.BadPackets++
			r.mu.Unlock()
			continue
		}
		if p.OpCode != dhcpv4.OpcodeBootReply {
			continue // a client's request on the same wire (another bench, a relay)
		}
		r.mu.Lock()
		e := r.waiting[p.TransactionID]
		if e == nil || string(e.mac) != string(p.ClientHWAddr) {
			r.rep.StrayReplies++
			e = nil
		}
		r.mu.Unlock()
		if e == nil {
			continue
		}
		select {
		case e.replies <- p:
		default: // the exchange is not keeping up with a flood of duplicates
			r.mu.Lock()
			r.rep.IgnoredReplies++
			r.mu.Unlock()
		}
	}
}

// verdict is what a step makes of a reply.
type verdict int

const (
	skip verdict = iota // not for this step: keep waiting
	take                // the answer: the step is done
	nak                 // a NAK: the exchange fails
)

func acceptOffer(p *dhcpv4.DHCPv4) verdict {
	if p.MessageType() == dhcpv4.MessageTypeOffer && isSet(addrOf(p.YourIPAddr)) {
		return take
	}
	return skip
}

func acceptAck(p *dhcpv4.DHCPv4) verdict {
	switch p.MessageType() {
	case dhcpv4.MessageTypeAck:
		if isSet(addrOf(p.YourIPAddr)) {
			return take
		}
	case dhcpv4.MessageTypeNak:
		return nak
	}
	return skip
}

// exchange runs client i's DORA (and RELEASE) and records the outcome.
func (r *stormRun) exchange(ctx context.Context, i int) {
	e := &exchange{mac: ClientMAC(i), replies: make(chan *dhcpv4.DHCPv4, repliesQueued)}
	r.mu.Lock()
	for { // a fresh xid nobody running uses: bounded in practice, 2^32 values for ≤ 2^20 exchanges
		binary.BigEndian.PutUint32(e.xid[:], rand.Uint32())
		if r.waiting[e.xid] == nil {
			break
		}
	}
	r.waiting[e.xid] = e
	r.rep.Started++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, e.xid)
		r.mu.Unlock()
	}()

	ectx, cancel := context.WithTimeout(ctx, r.c.Timeout)
	defer cancel()
	e.start = time.Now()

	offer, fail := r.step(ctx, ectx, e, r.request(e, dhcpv4.MessageTypeDiscover, netip.Addr{}, netip.Addr{}), FailTimeoutOffer, acceptOffer)
	if fail != "" {
		r.failed(e, fail, "")
		return
	}
	ip, sid := addrOf(offer.YourIPAddr), addrOf(offer.ServerIdentifier())
	r.hold(e, ip, false, "offer")

	ack, fail := r.step(ctx, ectx, e, r.request(e, dhcpv4.MessageTypeRequest, ip, sid), FailTimeoutAck, acceptAck)
	if fail != "" {
		reason := ""
		if ack != nil {
			reason = ack.Message()
		}
		r.failed(e, fail, reason)
		return
	}
	took := time.Since(e.start)
	ip = addrOf(ack.YourIPAddr)
	if s := addrOf(ack.ServerIdentifier()); isSet(s) {
		sid = s
	}
	r.hold(e, ip, true, "ack")
	r.mu.Lock()
	r.rep.Completed++
	r.rep.Acks++
	r.rep.Servers[sid.String()]++
	r.latencies = append(r.latencies, took)
	r.mu.Unlock()

	if r.c.Release {
		rel := r.request(e, dhcpv4.MessageTypeRelease, netip.Addr{}, sid)
		rel.ClientIPAddr = ip.AsSlice()
		rel.Flags = 0 // no reply to ask for
		// Drop the hold first: the server may hand the address out
		// again as soon as it has the RELEASE.
		r.unhold(e)
		err := r.tr.Send(rel.ToBytes())
		r.mu.Lock()
		if err == nil {
			r.rep.Releases++
		}
		r.mu.Unlock()
	}
}

// step sends pkt and waits for the reply that accept takes, sending again
// every Retransmit up to Retries times. It returns the reply, or the
// failure cause (timeout, a NAK with the NAK as reply, a send error, or
// cancelled when the storm's ctx ended). ectx is the exchange's deadline.
func (r *stormRun) step(ctx, ectx context.Context, e *exchange, pkt *dhcpv4.DHCPv4, timeout string, accept func(*dhcpv4.DHCPv4) verdict) (*dhcpv4.DHCPv4, string) {
	cause := func() string {
		if ctx.Err() != nil {
			return FailCancelled
		}
		return timeout
	}
	for send := 0; send <= r.c.Retries; send++ {
		if ectx.Err() != nil {
			return nil, cause()
		}
		pkt.NumSeconds = uint16(min(time.Since(e.start)/time.Second, math.MaxUint16))
		if err := r.tr.Send(pkt.ToBytes()); err != nil {
			return nil, FailSendError
		}
		if send > 0 {
			r.mu.Lock()
			r.rep.Retransmits++
			r.mu.Unlock()
		}
		t := time.NewTimer(r.c.Retransmit)
	wait:
		for {
			select {
			case p := <-e.replies:
				switch accept(p) {
				case take:
					t.Stop()
					return p, ""
				case nak:
					t.Stop()
					return p, FailNAK
				}
				r.mu.Lock()
				r.rep.IgnoredReplies++
				r.mu.Unlock()
			case <-t.C:
				break wait
			case <-ectx.Done():
				t.Stop()
				return nil, cause()
			}
		}
	}
	return nil, timeout
}

// request builds a client message: BROADCAST flag set (the client has no
// address yet, so servers must broadcast the reply), chaddr, 53, 50 and 54
// when given, 55, 57 and the PXE options.
func (r *stormRun) request(e *exchange, mt dhcpv4.MessageType, want, server netip.Addr) *dhcpv4.DHCPv4 {
	p := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		TransactionID: e.xid,
		Flags:         0x8000, // BROADCAST (RFC 2131 §2, figure 2)
		ClientHWAddr:  e.mac,
		Options:       make(dhcpv4.Options, 10),
	}
	o := p.Options
	o[dhcpv4.OptionDHCPMessageType.Code()] = []byte{byte(mt)}
	if want.IsValid() {
		o[dhcpv4.OptionRequestedIPAddress.Code()] = want.AsSlice()
	}
	if server.IsValid() {
		o[dhcpv4.OptionServerIdentifier.Code()] = server.AsSlice()
	}
	if mt == dhcpv4.MessageTypeRelease {
		return p
	}
	// What a PXE ROM asks for (subnet mask, router, DNS, host name,
	// domain, lease times, vendor class and specific, TFTP server, boot
	// file): the servers build full replies, as in a real boot.
	o[dhcpv4.OptionParameterRequestList.Code()] = []byte{1, 3, 6, 12, 15, 28, 43, 51, 54, 58, 59, 60, 66, 67}
	// 57: the largest message we take, one Ethernet frame (RFC 2132
	// §9.10; PXE ROMs send 1260–1500).
	o[dhcpv4.OptionMaximumDHCPMessageSize.Code()] = []byte{1500 >> 8, 1500 & 0xff}
	if r.c.PXE {
		o[dhcpv4.OptionClassIdentifier.Code()] = fmt.Appendf(nil, "PXEClient:Arch:%05d:UNDI:002001", r.c.Arch)
		o[dhcpv4.OptionClientSystemArchitectureType.Code()] = binary.BigEndian.AppendUint16(nil, r.c.Arch) // 93, RFC 4578 §2.1
		o[dhcpv4.OptionClientNetworkInterfaceIdentifier.Code()] = []byte{1, 2, 1}                          // 94: UNDI 2.1, RFC 4578 §2.2
		o[dhcpv4.OptionClientMachineIdentifier.Code()] = clientGUID(e.mac)                                 // 97, RFC 4578 §2.3
	}
	return p
}

// clientGUID is option 97: type 0 and a 16-byte GUID, fixed per MAC as a
// machine's SMBIOS UUID is.
func clientGUID(mac net.HardwareAddr) []byte {
	b := make([]byte, 17)
	copy(b[1:], "mtftpd-b")
	copy(b[11:], mac)
	return b
}

// hold records that e's client holds ip (offered, or ACKed with acked)
// and counts a duplicate if another client of this storm holds it too.
func (r *stormRun) hold(e *exchange, ip netip.Addr, acked bool, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind == "offer" {
		r.rep.Offers++
	}
	me := string(e.mac)
	if e.ip.IsValid() && e.ip != ip { // the ACK moved the client: drop the offered address
		r.unholdLocked(e)
	}
	holders := r.held[ip]
	for mac, other := range holders {
		if mac == me || (acked && !other) {
			continue // an ACK is a duplicate only of another ACK
		}
		if acked {
			r.rep.DuplicateAcks++
		} else {
			r.rep.DuplicateOffers++
		}
		if len(r.rep.Duplicates) < maxDuplicatesListed {
			r.rep.Duplicates = append(r.rep.Duplicates, DHCPDuplicate{
				Kind: kind, IP: ip.String(), MAC: e.mac.String(), HeldBy: net.HardwareAddr(mac).String(), Acked: other,
			})
		}
		break // one duplicate per reply, however many hold it
	}
	if holders == nil {
		holders = make(map[string]bool, 1)
		r.held[ip] = holders
	}
	holders[me] = acked
	e.ip = ip
}

func (r *stormRun) unhold(e *exchange) {
	r.mu.Lock()
	r.unholdLocked(e)
	r.mu.Unlock()
}

func (r *stormRun) unholdLocked(e *exchange) {
	if !e.ip.IsValid() {
		return
	}
	if h := r.held[e.ip]; h != nil {
		delete(h, string(e.mac))
		if len(h) == 0 {
			delete(r.held, e.ip)
		}
	}
	e.ip = netip.Addr{}
}

// failed records a failed exchange; an address it was offered is no
// longer held.
func (r *stormRun) failed(e *exchange, cause, nakReason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unholdLocked(e)
	r.rep.Failed++
	r.rep.Failures[cause]++
	if cause == FailNAK {
		r.rep.NAKs++
		r.rep.NAKReasons[strings.TrimRight(nakReason, "\x00")]++
	}
}

// latencyOf summarises samples (nearest-rank percentiles).
func latencyOf(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	s := slices.Clone(samples)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rank := func(p float64) float64 {
		k := int(math.Ceil(p/100*float64(len(s)))) - 1
		return ms(s[max(k, 0)])
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{P50: rank(50), P95: rank(95), P99: rank(99), Max: ms(s[len(s)-1]), Mean: ms(sum) / float64(len(s))}
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}

func isSet(a netip.Addr) bool { return a.IsValid() && !a.IsUnspecified() }
