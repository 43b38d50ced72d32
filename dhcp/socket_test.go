package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// serve runs s.Serve on loopback sockets and stops it at cleanup,
// checking that every goroutine it started is gone.
func serve(t *testing.T, s *Server) {
	t.Helper()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s.life.Lock()
	ready := s.readyChan()
	s.life.Unlock()
	go func() { done <- s.Serve(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not open its sockets")
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve after Shutdown: %v, want ErrServerClosed", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// exchange sends p from c to dst and reads one reply.
func exchange(t *testing.T, c *net.UDPConn, dst net.Addr, p *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := c.WriteTo(p.ToBytes(), dst); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no reply to %v: %v", p.MessageType(), err)
	}
	r, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if n < 300 {
		t.Errorf("reply of %d bytes on the wire", n)
	}
	return r
}

var loop = netip.MustParseAddr("127.0.0.1")

// loopbackServer is a server-mode Server for Serve on 127.0.0.1 with the
// lease file path and the pool 127.1.0.10 to last, set up (its store
// exists, for tests to hook) but not serving yet.
func loopbackServer(t *testing.T, path, last string) *Server {
	t.Helper()
	s := &Server{
		Addr:      netip.MustParseAddrPort("127.0.0.1:0"),
		LeaseFile: path,
		Subnets: []Subnet{{
			Prefix:     netip.MustParsePrefix("127.0.0.0/8"),
			RangeStart: netip.MustParseAddr("127.1.0.10"), RangeEnd: netip.MustParseAddr(last),
		}},
		Relays: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Log:    zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
	if err := s.setup(); err != nil {
		t.Fatal(err)
	}
	return s
}

// loopbackClient is a client socket on 127.0.0.1, closed at cleanup,
// and the options that make it its own relay (giaddr 127.0.0.1, RFC 8357
// source port), so that replies come back to it unicast.
func loopbackClient(t *testing.T) (*net.UDPConn, []dhcpv4.Modifier) {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loop, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, []dhcpv4.Modifier{relayed(loop), opt(optRelayAgent, []byte{19, 0})}
}

// TestLoopbackDORA: the real socket loop on 127.0.0.1, a client built with
// dhcpv4 acting as its own relay (giaddr 127.0.0.1, RFC 8357 source port)
// so the replies come back unicast.
func TestLoopbackDORA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s := loopbackServer(t, path, "127.1.0.20")
	serve(t, s)
	srv := s.Addrs()[0]
	c, asRelay := loopbackClient(t)

	offer := exchange(t, c, srv, build(t, dhcpv4.MessageTypeDiscover, mac(1), append(biosPXE(), asRelay...)...))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.YourIPAddr.String() != "127.1.0.10" || offer.BootFileName != "undionly.kpxe" {
		t.Fatalf("OFFER: %v", offer.Summary())
	}
	if !offer.ServerIdentifier().Equal(loop.AsSlice()) {
		t.Errorf("server id %v", offer.ServerIdentifier())
	}
	// The read loop hands the OFFER's promise to the committer by itself:
	// it reaches the disk with no REQUEST to wait for it (promise.go).
	for deadline := time.Now().Add(5 * time.Second); s.Counters.LeaseWrites.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if ls := leasesOnDisk(t, path); len(ls) != 1 || ls[0].IP.String() != "127.1.0.10" {
		t.Fatalf("after the OFFER alone, lease file: %+v (want the promise)", ls)
	}
	req := build(t, dhcpv4.MessageTypeRequest, mac(1), append(append(biosPXE(), asRelay...),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier())))...)
	ack := exchange(t, c, srv, req)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("ACK: %v", ack.Summary())
	}
	// The ACK left only after its lease was on disk.
	if ls := leasesOnDisk(t, path); len(ls) != 1 || ls[0].IP.String() != "127.1.0.10" {
		t.Errorf("lease file: %+v", ls)
	}
	// Garbage is counted, not answered; the loop carries on.
	c.WriteTo([]byte("not dhcp"), srv)
	inf := exchange(t, c, srv, build(t, dhcpv4.MessageTypeInform, mac(1), append(asRelay, dhcpv4.WithClientIP(offer.YourIPAddr))...))
	if inf.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("INFORM: %v", inf.MessageType())
	}
	if s.Counters.BadPacket.Load() != 1 || s.Counters.Ack.Load() != 2 || s.Counters.LeaseWrites.Load() != 1 {
		t.Errorf("counters: %v", s.Counters.Snapshot())
	}
}

func TestLoopbackProxy(t *testing.T) {
	s := &Server{
		Mode: ModeProxy, Addr: netip.MustParseAddrPort("127.0.0.1:0"), ProxyPort: freePort(t),
		Relays: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Log:    zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
	serve(t, s)
	addrs := s.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("proxy listens on %v, want 67 and 4011 roles", addrs)
	}
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loop, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := build(t, dhcpv4.MessageTypeDiscover, mac(1), append(uefiX64(), relayed(loop), opt(optRelayAgent, []byte{19, 0}))...)
	o := exchange(t, c, addrs[0], d)
	if o.MessageType() != dhcpv4.MessageTypeOffer || !o.YourIPAddr.IsUnspecified() || o.BootFileName != "ipxe.efi" {
		t.Fatalf("proxy OFFER: %v", o.Summary())
	}
	r := build(t, dhcpv4.MessageTypeRequest, mac(1), append(uefiX64(), dhcpv4.WithClientIP(loop.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loop.AsSlice())))...)
	a := exchange(t, c, addrs[1], r) // to "4011", answered at our source port
	if a.MessageType() != dhcpv4.MessageTypeAck || a.BootFileName != "ipxe.efi" {
		t.Fatalf("proxy ACK: %v", a.Summary())
	}
}

// Cancelling the context stops Serve with nil.
func TestServeContextCancel(t *testing.T) {
	s := &Server{Mode: ModeProxy, Addr: netip.MustParseAddrPort("127.0.0.1:0"), ProxyPort: freePort(t)}
	ctx, cancel := context.WithCancel(context.Background())
	s.life.Lock()
	ready := s.readyChan()
	s.life.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	<-ready
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Error("second Serve worked")
	}
	if err := (&Server{Interfaces: []string{"no-such-if0"}, Mode: ModeProxy, Addr: netip.MustParseAddrPort("127.0.0.1:0")}).Serve(context.Background()); err == nil {
		t.Error("Serve on a missing interface worked")
	}
}

// TestListenThenServe: sockets opened by Listen (before a privilege
// drop, in cmd/mtftpd) are the ones Serve answers on; a mode mismatch is
// refused.
func TestListenThenServe(t *testing.T) {
	ss, err := Listen(context.Background(), ModeProxy, netip.MustParseAddrPort("127.0.0.1:0"), freePort(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss.socks) != 2 {
		t.Fatalf("proxy mode: %d sockets, want 2 (67 and 4011 roles)", len(ss.socks))
	}
	wrong := &Server{Subnets: labSubnets(), Sockets: ss, Log: zerolog.New(zerolog.NewTestWriter(t))}
	if err := wrong.Serve(context.Background()); err == nil {
		t.Fatal("server-mode Serve took proxy-mode sockets")
	}
	ss, err = Listen(context.Background(), ModeProxy, netip.MustParseAddrPort("127.0.0.1:0"), freePort(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := ss.socks[0].c.LocalAddr().String()
	s := &Server{Mode: ModeProxy, Sockets: ss, Relays: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	serve(t, s)
	if got := s.Addrs()[0].String(); got != want {
		t.Fatalf("serving on %s, Listen opened %s", got, want)
	}
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loop, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := build(t, dhcpv4.MessageTypeDiscover, mac(1), append(uefiX64(), relayed(loop), opt(optRelayAgent, []byte{19, 0}))...)
	if o := exchange(t, c, s.Addrs()[0], d); o.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("proxy OFFER: %v", o.Summary())
	}
}
