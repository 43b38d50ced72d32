package ra

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv6"
)

// Defaults of Advertiser (docs/protocols.md §13).
const (
	// DefaultListen is how long an interface only listens (and solicits)
	// before it answers: RFC 4861 §10 has routers answer a solicitation
	// within MAX_RA_DELAY_TIME (0.5 s), so three solicitations a second
	// apart leave a real router ample time to show itself.
	DefaultListen = 3 * time.Second
	// DefaultMinInterval is the least time between two advertisements on
	// one interface. Solicitations that arrive sooner are answered
	// together by the next one (it goes to all nodes), so a flood of
	// solicitations costs at most 10 packets a second and every one is
	// answered within 100 ms — well inside iPXE's first retransmission
	// at 125 ms.
	DefaultMinInterval = 100 * time.Millisecond
	// solicitEvery spaces the solicitations sent while listening.
	solicitEvery = time.Second
)

// hopLimit is the only hop limit a neighbour discovery message may carry
// (RFC 4861 §6.1): anything else was forwarded from off the link.
const hopLimit = 255

// allNodes and allRouters are the link-scope groups of RFC 4291 §2.7.1.
var (
	allNodes   = netip.MustParseAddr("ff02::1")
	allRouters = netip.MustParseAddr("ff02::2")
)

// ErrNoInterface is returned by Open when no interface can advertise.
var ErrNoInterface = errors.New("ra: no interface to advertise on")

// State is where an interface stands.
type State int32

// The states of an interface, in order.
const (
	Listening State = iota // soliciting and listening for another router; answering nothing
	Answering              // no other router seen: solicitations are answered
	Stopped                // another router advertises here, or the socket failed: silent for good
)

func (s State) String() string {
	switch s {
	case Listening:
		return "listening"
	case Answering:
		return "answering"
	}
	return "stopped"
}

// Conn is what an interface needs of its NDP socket; *ndp.Conn has it.
type Conn interface {
	ReadFrom() (ndp.Message, *ipv6.ControlMessage, netip.Addr, error)
	WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error
	SetReadDeadline(t time.Time) error
	Close() error
}

// Iface is one interface to advertise on.
type Iface struct {
	Name  string
	Index int
	MAC   net.HardwareAddr // source link-layer address option when 6 bytes; else none
	Conn  Conn
	// Own reports whether an address is this host's own on the interface:
	// our advertisements come back to us (multicast loopback) and must not
	// read as another router's. Nil means none is.
	Own func(netip.Addr) bool
	// DHCPv6, when valid, is the prefix mtftpd's DHCPv6 server serves on
	// this interface: the advertisement then says M=1, O=1 (addresses and
	// options from DHCPv6) and carries the prefix, on-link and not
	// autonomous (no SLAAC address), so clients reach the server's
	// address in it directly. Zero: M=0, O=0, no prefix.
	DHCPv6 netip.Prefix
	// PrefixLifetime is the DHCPv6 prefix's valid and preferred lifetime,
	// the DHCPv6 lease time (dhcp6.lease_time): on-link as long as the
	// address a client got with it, and not a day past mtftpd's going
	// away. 0 = DefaultPrefixLifetime.
	PrefixLifetime time.Duration

	state  atomic.Int32
	sent   atomic.Uint64
	solic  atomic.Uint64
	router atomic.Pointer[netip.Addr] // the other router seen, when Stopped by one
	// prefixOut is set once an advertisement with the DHCPv6 prefix went
	// out, until a final one withdraws it.
	prefixOut atomic.Bool
	// sendMu orders run's advertisements before Serve's withdrawal: none
	// goes out after it.
	sendMu sync.Mutex
}

// State returns where the interface stands.
func (f *Iface) State() State { return State(f.state.Load()) }

// Sent returns the advertisements sent on the interface.
func (f *Iface) Sent() uint64 { return f.sent.Load() }

// Solicitations returns the router solicitations answered or coalesced.
func (f *Iface) Solicitations() uint64 { return f.solic.Load() }

// Advertiser answers router solicitations on its interfaces.
type Advertiser struct {
	Ifaces      []*Iface
	Listen      time.Duration // 0 = DefaultListen
	MinInterval time.Duration // 0 = DefaultMinInterval
	Log         zerolog.Logger

	once sync.Once
	stop chan struct{}
}

func (a *Advertiser) stopChan() chan struct{} {
	a.once.Do(func() { a.stop = make(chan struct{}) })
	return a.stop
}

// Serve runs every interface until ctx is cancelled or Shutdown is called,
// then closes the sockets and returns nil. An interface that stops (another
// router, a failed socket) does not end Serve.
func (a *Advertiser) Serve(ctx context.Context) error {
	stop := a.stopChan()
	var wg sync.WaitGroup
	for _, f := range a.Ifaces {
		wg.Go(func() { a.run(f) })
	}
	select {
	case <-ctx.Done():
	case <-stop:
	}
	for _, f := range a.Ifaces {
		f.sendMu.Lock()
		f.state.Store(int32(Stopped)) // run sends nothing after the withdrawal
		f.withdraw(a.Log.With().Str("interface", f.Name).Logger())
		f.sendMu.Unlock()
		f.Conn.Close() // ends the blocked read
	}
	wg.Wait()
	return nil
}

// Shutdown stops Serve. It may be called more than once.
func (a *Advertiser) Shutdown(context.Context) error {
	stop := a.stopChan()
	select {
	case <-stop:
	default:
		close(stop)
	}
	return nil
}

// Close closes every socket (for an Advertiser that never served).
func (a *Advertiser) Close() {
	for _, f := range a.Ifaces {
		f.Conn.Close()
	}
}

// run is one interface's loop: it solicits and listens for Listen, then
// answers solicitations with at most one advertisement per MinInterval,
// and returns when another router advertises or the socket fails (closed
// by Serve included). It keeps no state per sender.
func (a *Advertiser) run(f *Iface) {
	listen, minGap := a.Listen, a.MinInterval
	if listen <= 0 {
		listen = DefaultListen
	}
	if minGap <= 0 {
		minGap = DefaultMinInterval
	}
	log := a.Log.With().Str("interface", f.Name).Logger()
	start := time.Now()
	listenEnd, nextRS := start.Add(listen), start
	var lastRA time.Time
	pending := false
	for {
		now := time.Now()
		if f.State() == Listening && !now.Before(listenEnd) {
			f.state.Store(int32(Answering))
			if f.DHCPv6.IsValid() {
				log.Info().Stringer("prefix", f.DHCPv6).Msg("ipv6: no router advertises here; answering router solicitations (M=1, O=1, the DHCPv6 prefix on-link, lifetime 0)")
			} else {
				log.Info().Msg("ipv6: no router advertises here; answering router solicitations (M=0, O=0, lifetime 0)")
			}
		}
		var deadline time.Time
		switch {
		case f.State() == Listening:
			if !now.Before(nextRS) {
				if err := f.Conn.WriteTo(&ndp.RouterSolicitation{}, f.cm(), allRouters); err != nil {
					log.Debug().Err(err).Msg("ipv6: router solicitation not sent")
				}
				nextRS = now.Add(solicitEvery)
			}
			deadline = listenEnd
			if nextRS.Before(deadline) {
				deadline = nextRS
			}
		case pending && !now.Before(lastRA.Add(minGap)):
			if !f.answer(log) {
				return // Serve withdrew the prefix
			}
			pending, lastRA = false, now
		case pending:
			deadline = lastRA.Add(minGap)
		}
		if err := f.Conn.SetReadDeadline(deadline); err != nil {
			f.fail(log, err)
			return
		}
		m, cm, src, err := f.Conn.ReadFrom()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			f.fail(log, err)
			return
		}
		if cm == nil || cm.IfIndex != f.Index || cm.HopLimit != hopLimit {
			continue // another interface's, or not from this link
		}
		switch m := m.(type) {
		case *ndp.RouterAdvertisement:
			if f.Own != nil && f.Own(src) {
				continue
			}
			f.router.Store(&src)
			f.state.Store(int32(Stopped))
			if carries(m, f.DHCPv6) {
				f.prefixOut.Store(false) // the router's to withdraw now, not ours
			} else {
				f.withdraw(log) // the router does not say the prefix is on-link: we no longer do either
			}
			f.Conn.Close()
			log.Info().Stringer("router", src).Msg("ipv6: another router advertises here; sending no router advertisements on this interface")
			return
		case *ndp.RouterSolicitation:
			if f.State() == Answering {
				f.solic.Add(1)
				pending = true
			}
		}
	}
}

// answer sends an advertisement unless Serve has stopped the interface.
func (f *Iface) answer(log zerolog.Logger) bool {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if f.State() != Answering {
		return false
	}
	if err := f.Conn.WriteTo(f.advert(f.lifetime()), f.cm(), allNodes); err != nil {
		// The link-local address may still be tentative; the client
		// solicits again.
		log.Debug().Err(err).Msg("ipv6: router advertisement not sent")
		return true
	}
	f.sent.Add(1)
	if f.DHCPv6.IsValid() {
		f.prefixOut.Store(true)
	}
	return true
}

// fail stops an interface whose socket failed or was closed.
func (f *Iface) fail(log zerolog.Logger, err error) {
	if f.State() != Stopped && !errors.Is(err, net.ErrClosed) {
		log.Warn().Err(err).Msg("ipv6: router advertisement socket failed; stopped on this interface")
	}
	f.state.Store(int32(Stopped))
}

// cm sends out of the interface with the hop limit of RFC 4861 and lets the
// kernel pick the link-local source address.
func (f *Iface) cm() *ipv6.ControlMessage {
	return &ipv6.ControlMessage{HopLimit: hopLimit, IfIndex: f.Index}
}

// DefaultPrefixLifetime is the advertised DHCPv6 prefix's lifetime when
// Iface.PrefixLifetime is 0: DHCPv6's default lease time (1 h).
const DefaultPrefixLifetime = time.Hour

func (f *Iface) lifetime() time.Duration {
	if f.PrefixLifetime > 0 {
		return f.PrefixLifetime
	}
	return DefaultPrefixLifetime
}

// withdraw sends, once, an advertisement with the DHCPv6 prefix's
// lifetimes 0 where one with the prefix went out: hosts drop it from
// their on-link list at once (RFC 4861 §6.3.4) rather than keep
// reaching the link's addresses directly for up to PrefixLifetime.
func (f *Iface) withdraw(log zerolog.Logger) {
	if !f.prefixOut.Swap(false) {
		return
	}
	if err := f.Conn.WriteTo(f.advert(0), f.cm(), allNodes); err != nil {
		log.Debug().Err(err).Msg("ipv6: final router advertisement (prefix lifetime 0) not sent")
		return
	}
	f.sent.Add(1)
}

// carries reports whether ra lists prefix p as on-link.
func carries(ra *ndp.RouterAdvertisement, p netip.Prefix) bool {
	for _, o := range ra.Options {
		if pi, ok := o.(*ndp.PrefixInformation); ok && pi.OnLink && pi.ValidLifetime > 0 &&
			netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength)).Masked() == p.Masked() {
			return true
		}
	}
	return false
}

// advert is the advertisement that ends a client's IPv6 autoconfiguration
// at once: not a default router (lifetime 0, RFC 4861 §4.2), hop limit,
// reachable time and retransmit timer unspecified (0); without DHCPv6 no
// managed or other configuration and no prefix (so no address), with it
// M=1, O=1 and the prefix on-link, not autonomous (RFC 4861 §4.6.2),
// valid and preferred for life (0: withdrawn).
func (f *Iface) advert(life time.Duration) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{}
	if len(f.MAC) == 6 {
		ra.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: f.MAC}}
	}
	if p := f.DHCPv6; p.IsValid() {
		ra.ManagedConfiguration, ra.OtherConfiguration = true, true
		ra.Options = append(ra.Options, &ndp.PrefixInformation{
			PrefixLength: uint8(p.Bits()), OnLink: true, AutonomousAddressConfiguration: false,
			ValidLifetime: life, PreferredLifetime: life, Prefix: p.Masked().Addr(),
		})
	}
	return ra
}
