package ra

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv6"
)

// fakeConn is an NDP socket in memory: in feeds ReadFrom, WriteTo records.
type fakeConn struct {
	in     chan pkt
	mu     sync.Mutex
	out    []sent
	wrote  chan struct{} // one token per WriteTo
	dl     time.Time
	closed chan struct{}
	once   sync.Once
}

type pkt struct {
	m   ndp.Message
	cm  *ipv6.ControlMessage
	src netip.Addr
}

type sent struct {
	m   ndp.Message
	cm  *ipv6.ControlMessage
	dst netip.Addr
}

func newFake() *fakeConn {
	return &fakeConn{in: make(chan pkt, 4096), wrote: make(chan struct{}, 4096), closed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom() (ndp.Message, *ipv6.ControlMessage, netip.Addr, error) {
	c.mu.Lock()
	dl := c.dl
	c.mu.Unlock()
	var timer <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timer = t.C
	}
	select {
	case p := <-c.in:
		return p.m, p.cm, p.src, nil
	case <-timer:
		return nil, nil, netip.Addr{}, os.ErrDeadlineExceeded
	case <-c.closed:
		return nil, nil, netip.Addr{}, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error {
	c.mu.Lock()
	c.out = append(c.out, sent{m, cm, dst})
	c.mu.Unlock()
	c.wrote <- struct{}{}
	return nil
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	c.mu.Unlock()
	return nil
}

func (c *fakeConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

func (c *fakeConn) adverts() []sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sent
	for _, s := range c.out {
		if _, ok := s.m.(*ndp.RouterAdvertisement); ok {
			out = append(out, s)
		}
	}
	return out
}

const testIndex = 7

var (
	client = netip.MustParseAddr("fe80::1")
	router = netip.MustParseAddr("fe80::99")
	self   = netip.MustParseAddr("fe80::5")
)

func onLink() *ipv6.ControlMessage {
	return &ipv6.ControlMessage{IfIndex: testIndex, HopLimit: hopLimit}
}

// start serves one fake interface and returns it with a stop function;
// mod changes the interface before it runs.
func start(t *testing.T, listen, gap time.Duration, mod ...func(*Iface)) (*Iface, *fakeConn) {
	t.Helper()
	c := newFake()
	f := &Iface{Name: "eth9", Index: testIndex, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Conn: c,
		Own: func(a netip.Addr) bool { return a == self }}
	for _, m := range mod {
		m(f)
	}
	a := &Advertiser{Ifaces: []*Iface{f}, Listen: listen, MinInterval: gap, Log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() { done <- a.Serve(context.Background()) }()
	t.Cleanup(func() {
		a.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f, c
}

// waitState polls (bounded) until f reaches want.
func waitState(t *testing.T, f *Iface, want State) {
	t.Helper()
	for range 500 {
		if f.State() == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("interface state %v, want %v", f.State(), want)
}

// waitAdverts waits (bounded) until c has written n advertisements.
func waitAdverts(t *testing.T, c *fakeConn, n int) []sent {
	t.Helper()
	for range 500 {
		if a := c.adverts(); len(a) >= n {
			return a
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d advertisements sent, want %d", len(c.adverts()), n)
	return nil
}

// checkAdvert asserts the advertisement that ends IPv6 autoconfiguration:
// to all nodes, hop limit 255, M=0, O=0, lifetime 0, no prefix.
func checkAdvert(t *testing.T, s sent) {
	t.Helper()
	ra := s.m.(*ndp.RouterAdvertisement)
	if s.dst != allNodes || s.cm.HopLimit != hopLimit || s.cm.IfIndex != testIndex {
		t.Errorf("advertisement to %v hop limit %d ifindex %d, want ff02::1 255 %d", s.dst, s.cm.HopLimit, s.cm.IfIndex, testIndex)
	}
	if ra.ManagedConfiguration || ra.OtherConfiguration || ra.RouterLifetime != 0 {
		t.Errorf("advertisement M=%v O=%v lifetime %v, want false false 0", ra.ManagedConfiguration, ra.OtherConfiguration, ra.RouterLifetime)
	}
	for _, o := range ra.Options {
		if _, ok := o.(*ndp.LinkLayerAddress); !ok {
			t.Errorf("advertisement carries option %T, want only the source link-layer address", o)
		}
	}
}

func TestAnswersOnlyAfterListening(t *testing.T) {
	f, c := start(t, 300*time.Millisecond, time.Millisecond)
	<-c.wrote // the first solicitation of the listening phase
	c.mu.Lock()
	first := c.out[0]
	c.mu.Unlock()
	if _, ok := first.m.(*ndp.RouterSolicitation); !ok || first.dst != allRouters {
		t.Fatalf("first packet %T to %v, want a router solicitation to ff02::2", first.m, first.dst)
	}
	c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), client}
	waitState(t, f, Answering)
	if n := len(c.adverts()); n != 0 {
		t.Fatalf("%d advertisements sent while listening, want 0", n)
	}
	c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), client}
	checkAdvert(t, waitAdverts(t, c, 1)[0])
}

// With DHCPv6 on the interface: M=1, O=1 and the prefix, on-link, not
// autonomous; still no default router.
func TestAdvertisesDHCPv6Prefix(t *testing.T) {
	p := netip.MustParsePrefix("2001:db8:1::/64")
	f, c := start(t, time.Millisecond, time.Millisecond, func(f *Iface) { f.DHCPv6 = p })
	waitState(t, f, Answering)
	c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), client}
	ra := waitAdverts(t, c, 1)[0].m.(*ndp.RouterAdvertisement)
	if !ra.ManagedConfiguration || !ra.OtherConfiguration || ra.RouterLifetime != 0 {
		t.Errorf("M=%v O=%v lifetime %v, want true true 0", ra.ManagedConfiguration, ra.OtherConfiguration, ra.RouterLifetime)
	}
	var pis []*ndp.PrefixInformation
	for _, o := range ra.Options {
		if pi, ok := o.(*ndp.PrefixInformation); ok {
			pis = append(pis, pi)
		}
	}
	if len(pis) != 1 || pis[0].Prefix != p.Addr() || pis[0].PrefixLength != 64 || !pis[0].OnLink || pis[0].AutonomousAddressConfiguration ||
		pis[0].ValidLifetime != DefaultPrefixLifetime || pis[0].PreferredLifetime != DefaultPrefixLifetime {
		t.Fatalf("prefix options %+v, want one %v on-link, not autonomous, for %v", pis, p, DefaultPrefixLifetime)
	}
	// The advertisement must survive the wire.
	b, err := ndp.MarshalMessage(ra)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ndp.ParseMessage(b); err != nil {
		t.Fatal(err)
	}
}

func TestStopsWhenAnotherRouterAdvertises(t *testing.T) {
	f, c := start(t, time.Millisecond, time.Millisecond)
	waitState(t, f, Answering)
	// Our own advertisement coming back, one off the link and one of
	// another interface are no other router on this link.
	c.in <- pkt{&ndp.RouterAdvertisement{}, onLink(), self}
	c.in <- pkt{&ndp.RouterAdvertisement{}, &ipv6.ControlMessage{IfIndex: testIndex, HopLimit: 64}, router}
	c.in <- pkt{&ndp.RouterAdvertisement{}, &ipv6.ControlMessage{IfIndex: testIndex + 1, HopLimit: hopLimit}, router}
	c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), client}
	waitAdverts(t, c, 1)
	if f.State() != Answering {
		t.Fatalf("state %v after our own, off-link and other-interface advertisements, want answering", f.State())
	}
	c.in <- pkt{&ndp.RouterAdvertisement{RouterLifetime: 1800 * time.Second}, onLink(), router}
	waitState(t, f, Stopped)
	if got := f.router.Load(); got == nil || *got != router {
		t.Errorf("router seen %v, want %v", got, router)
	}
	c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), client}
	time.Sleep(50 * time.Millisecond)
	if n := len(c.adverts()); n != 1 {
		t.Fatalf("%d advertisements after another router appeared, want still 1", n)
	}
}

func TestStopsWhenRouterSeenWhileListening(t *testing.T) {
	f, c := start(t, time.Hour, time.Millisecond)
	<-c.wrote
	c.in <- pkt{&ndp.RouterAdvertisement{}, onLink(), router}
	waitState(t, f, Stopped)
	if n := len(c.adverts()); n != 0 {
		t.Fatalf("%d advertisements sent, want 0", n)
	}
}

// A flood of solicitations costs one advertisement per MinInterval: with an
// interval of an hour, exactly one.
func TestSolicitationFloodIsRateLimited(t *testing.T) {
	f, c := start(t, time.Millisecond, time.Hour)
	waitState(t, f, Answering)
	for i := range 2000 {
		src := netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 14: byte(i >> 8), 15: byte(i)})
		c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), src}
	}
	for range 500 {
		if f.Solicitations() == 2000 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f.Solicitations() != 2000 {
		t.Fatalf("%d solicitations read, want 2000", f.Solicitations())
	}
	if n := len(c.adverts()); n != 1 {
		t.Fatalf("%d advertisements for 2000 solicitations within MinInterval, want 1", n)
	}
}

// prefixes returns the prefix options of advertisement s.
func prefixes(s sent) []*ndp.PrefixInformation {
	var pis []*ndp.PrefixInformation
	for _, o := range s.m.(*ndp.RouterAdvertisement).Options {
		if pi, ok := o.(*ndp.PrefixInformation); ok {
			pis = append(pis, pi)
		}
	}
	return pis
}

// The DHCPv6 prefix lives as long as PrefixLifetime (the DHCPv6 lease
// time), and a final advertisement withdraws it (lifetimes 0) when
// Serve ends, or when another router appears that does not carry it —
// not where it was never advertised, nor where that router carries it.
func TestPrefixLifetimeAndWithdrawal(t *testing.T) {
	p := netip.MustParsePrefix("2001:db8:1::/64")
	run := func(t *testing.T, answer bool, end func(*Advertiser, *fakeConn)) []sent {
		c := newFake()
		f := &Iface{Name: "eth9", Index: testIndex, Conn: c, DHCPv6: p, PrefixLifetime: 20 * time.Minute}
		a := &Advertiser{Ifaces: []*Iface{f}, Listen: time.Millisecond, MinInterval: time.Millisecond, Log: zerolog.Nop()}
		done := make(chan error, 1)
		go func() { done <- a.Serve(context.Background()) }()
		waitState(t, f, Answering)
		if answer {
			c.in <- pkt{&ndp.RouterSolicitation{}, onLink(), client}
			if pi := prefixes(waitAdverts(t, c, 1)[0]); len(pi) != 1 || pi[0].ValidLifetime != 20*time.Minute || pi[0].PreferredLifetime != 20*time.Minute {
				t.Fatalf("prefix %+v, want lifetimes 20m", pi)
			}
		}
		end(a, c)
		a.Shutdown(context.Background())
		<-done
		return c.adverts()
	}
	withdrawn := func(t *testing.T, ads []sent, want bool) {
		t.Helper()
		last := prefixes(ads[len(ads)-1])
		got := len(ads) == 2 && len(last) == 1 && last[0].Prefix == p.Addr() && last[0].ValidLifetime == 0 && last[0].PreferredLifetime == 0
		if got != want || (!want && len(ads) != 1) {
			t.Errorf("%d advertisements, the last with %+v; want withdrawn %v", len(ads), last, want)
		}
	}
	t.Run("shutdown", func(t *testing.T) {
		withdrawn(t, run(t, true, func(*Advertiser, *fakeConn) {}), true)
	})
	t.Run("never-advertised", func(t *testing.T) {
		if ads := run(t, false, func(*Advertiser, *fakeConn) {}); len(ads) != 0 {
			t.Errorf("%d advertisements without a solicitation, want 0", len(ads))
		}
	})
	router := func(carry bool) func(*Advertiser, *fakeConn) {
		return func(a *Advertiser, c *fakeConn) {
			ra := &ndp.RouterAdvertisement{RouterLifetime: 1800 * time.Second}
			if carry {
				ra.Options = []ndp.Option{&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, ValidLifetime: time.Hour, PreferredLifetime: time.Hour, Prefix: p.Addr()}}
			}
			c.in <- pkt{ra, onLink(), netip.MustParseAddr("fe80::99")}
			waitState(t, a.Ifaces[0], Stopped)
		}
	}
	t.Run("router", func(t *testing.T) { withdrawn(t, run(t, true, router(false)), true) })
	t.Run("router-carries-prefix", func(t *testing.T) { withdrawn(t, run(t, true, router(true)), false) })
}
