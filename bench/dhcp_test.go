package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mtftpd/mtftpd/dhcp"
)

// memNet is an in-memory Transport: what the storm sends goes to a fake
// server goroutine, what the server answers comes back through Recv.
// Inside a synctest bubble every wait on it is durable, so retransmission
// timers run in virtual time.
type memNet struct {
	toServer, toClient chan []byte
	done               chan struct{}
	once               sync.Once
}

func newMemNet() *memNet {
	return &memNet{toServer: make(chan []byte, 1024), toClient: make(chan []byte, 1024), done: make(chan struct{})}
}

func (m *memNet) Send(b []byte) error {
	select {
	case m.toServer <- bytes.Clone(b):
		return nil
	case <-m.done:
		return net.ErrClosed
	}
}

func (m *memNet) Recv(b []byte) (int, error) {
	select {
	case p := <-m.toClient:
		return copy(b, p), nil
	case <-m.done:
		return 0, net.ErrClosed
	}
}

func (m *memNet) Close() error {
	m.once.Do(func() { close(m.done) })
	return nil
}

// serve runs handle on every datagram the clients send, one at a time,
// and delivers its replies, until the storm closes the transport.
func (m *memNet) serve(handle func(req *dhcpv4.DHCPv4) [][]byte) {
	for {
		select {
		case b := <-m.toServer:
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				panic(err)
			}
			for _, r := range handle(req) {
				select {
				case m.toClient <- r:
				case <-m.done:
					return
				}
			}
		case <-m.done:
			// Run has returned: whatever it sent is queued. Take it
			// all (a last RELEASE), answer nothing.
			for {
				select {
				case b := <-m.toServer:
					if req, err := dhcpv4.FromBytes(b); err == nil {
						handle(req)
					}
				default:
					return
				}
			}
		}
	}
}

var serverID = netip.MustParseAddr("192.0.2.1")

// fakeServer is a minimal DHCP server with knobs for the failure modes the
// storm must report.
type fakeServer struct {
	mu         sync.Mutex
	next       uint32                // next pool offset
	leases     map[string]netip.Addr // by MAC
	got        map[dhcpv4.MessageType][]*dhcpv4.DHCPv4
	sent       int                               // replies sent
	drops      map[string]int                    // "type mac" → dropped so far
	dropFirst  int                               // drop the first n DISCOVERs and REQUESTs of each client
	nak        func(mac net.HardwareAddr) string // non-empty: NAK the REQUEST with this reason
	noOffer    bool                              // never answer a DISCOVER
	noAck      bool                              // never answer a REQUEST
	sameAddr   bool                              // the bug: everybody gets 192.0.2.10
	delay      time.Duration                     // service time per request
	strayFirst bool                              // answer each DISCOVER first with an OFFER for an unknown xid and one for another chaddr
}

func newFakeServer() *fakeServer {
	return &fakeServer{leases: map[string]netip.Addr{}, got: map[dhcpv4.MessageType][]*dhcpv4.DHCPv4{}, drops: map[string]int{}}
}

func (f *fakeServer) count(mt dhcpv4.MessageType) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got[mt])
}

func (f *fakeServer) handle(req *dhcpv4.DHCPv4) [][]byte {
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	mt := req.MessageType()
	f.got[mt] = append(f.got[mt], req)
	mac := req.ClientHWAddr.String()
	if mt == dhcpv4.MessageTypeDiscover || mt == dhcpv4.MessageTypeRequest {
		k := mt.String() + " " + mac
		if f.drops[k] < f.dropFirst {
			f.drops[k]++
			return nil
		}
	}
	reply := func(t dhcpv4.MessageType, ip netip.Addr, msg string) []byte {
		r, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(t),
			dhcpv4.WithServerIP(serverID.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID.AsSlice())))
		if err != nil {
			panic(err)
		}
		if ip.IsValid() {
			r.YourIPAddr = ip.AsSlice()
		}
		if msg != "" {
			r.UpdateOption(dhcpv4.OptMessage(msg))
		}
		f.sent++
		return r.ToBytes()
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		if f.noOffer {
			return nil
		}
		ip, ok := f.leases[mac]
		if !ok {
			ip = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + f.next%240)})
			f.next++
			if f.sameAddr {
				ip = netip.MustParseAddr("192.0.2.10")
			}
			f.leases[mac] = ip
		}
		var out [][]byte
		if f.strayFirst {
			stray, _ := dhcpv4.FromBytes(reply(dhcpv4.MessageTypeOffer, ip, ""))
			stray.TransactionID[0] ^= 0xff
			other, _ := dhcpv4.FromBytes(reply(dhcpv4.MessageTypeOffer, ip, ""))
			other.ClientHWAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
			out = append(out, stray.ToBytes(), other.ToBytes())
		}
		return append(out, reply(dhcpv4.MessageTypeOffer, ip, ""))
	case dhcpv4.MessageTypeRequest:
		if f.noAck {
			return nil
		}
		if f.nak != nil {
			if why := f.nak(req.ClientHWAddr); why != "" {
				return [][]byte{reply(dhcpv4.MessageTypeNak, netip.Addr{}, why)}
			}
		}
		want := addrOf(req.RequestedIPAddress())
		if ip, ok := f.leases[mac]; !ok || ip != want {
			return [][]byte{reply(dhcpv4.MessageTypeNak, netip.Addr{}, "not your offer")}
		}
		return [][]byte{reply(dhcpv4.MessageTypeAck, want, "")}
	case dhcpv4.MessageTypeRelease:
		delete(f.leases, mac)
	}
	return nil
}

// storm runs s against handle over a memNet inside a synctest bubble and
// returns the report and the bubble's elapsed virtual time.
func storm(t *testing.T, s DHCPStorm, handle func(*dhcpv4.DHCPv4) [][]byte) (DHCPReport, time.Duration) {
	t.Helper()
	var rep DHCPReport
	var took time.Duration
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet()
		served := make(chan struct{})
		go func() {
			defer close(served)
			m.serve(handle)
		}()
		s.Transport = m
		start := time.Now()
		var err error
		rep, err = s.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		took = time.Since(start)
		<-served // the server has taken everything sent
	})
	if _, err := json.Marshal(rep); err != nil {
		t.Fatalf("report does not marshal: %v", err)
	}
	return rep, took
}

func TestStormCompletesWithPXEAndRelease(t *testing.T) {
	f := newFakeServer()
	f.delay = time.Millisecond
	rep, took := storm(t, DHCPStorm{Clients: 50, Concurrency: 8, Release: true, PXE: true, Arch: 7}, f.handle)
	if rep.Completed != 50 || rep.Failed != 0 || rep.Started != 50 || rep.NotStarted != 0 || rep.Stopped != "" {
		t.Fatalf("report: %+v", rep)
	}
	if rep.Offers != 50 || rep.Acks != 50 || rep.Releases != 50 || rep.Retransmits != 0 || rep.StrayReplies != 0 {
		t.Fatalf("counts: %+v", rep)
	}
	if rep.DuplicateOffers != 0 || rep.DuplicateAcks != 0 || rep.Servers[serverID.String()] != 50 {
		t.Fatalf("duplicates or servers: %+v", rep)
	}
	// The fake serves one request per ms: DISCOVER + REQUEST + RELEASE
	// for 50 clients is 150 ms, whatever the concurrency; the storm ends
	// when the last RELEASE is sent, before the server has read it.
	if took < 140*time.Millisecond || took > 150*time.Millisecond || rep.WallSeconds != took.Seconds() ||
		math.Abs(rep.ExchangesPerSec-50/took.Seconds()) > 1e-6 {
		t.Fatalf("took %v, wall %v s, %v/s", took, rep.WallSeconds, rep.ExchangesPerSec)
	}
	if len(f.leases) != 0 {
		t.Fatalf("leases left after RELEASE: %v", f.leases)
	}
	macs := map[string]bool{}
	for _, d := range f.got[dhcpv4.MessageTypeDiscover] {
		macs[d.ClientHWAddr.String()] = true
		if !d.IsBroadcast() || d.ClientHWAddr[0] != 0x02 {
			t.Fatalf("DISCOVER flags %#x chaddr %v: want BROADCAST and a locally administered MAC", d.Flags, d.ClientHWAddr)
		}
		if vc := d.ClassIdentifier(); vc != "PXEClient:Arch:00007:UNDI:002001" {
			t.Fatalf("option 60 %q", vc)
		}
		if a := d.Options.Get(dhcpv4.OptionClientSystemArchitectureType); !bytes.Equal(a, []byte{0, 7}) {
			t.Fatalf("option 93 %v", a)
		}
		if v := d.Options.Get(dhcpv4.OptionClientNetworkInterfaceIdentifier); !bytes.Equal(v, []byte{1, 2, 1}) {
			t.Fatalf("option 94 %v", v)
		}
		if g := d.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(g) != 17 || g[0] != 0 {
			t.Fatalf("option 97 %v", g)
		}
	}
	if len(macs) != 50 {
		t.Fatalf("%d distinct MACs, want 50", len(macs))
	}
	for _, r := range f.got[dhcpv4.MessageTypeRequest] {
		if addrOf(r.ServerIdentifier()) != serverID || !addrOf(r.RequestedIPAddress()).IsValid() || !r.IsBroadcast() {
			t.Fatalf("REQUEST: %s", r.Summary())
		}
	}
	for _, r := range f.got[dhcpv4.MessageTypeRelease] {
		if addrOf(r.ServerIdentifier()) != serverID || !isSet(addrOf(r.ClientIPAddr)) {
			t.Fatalf("RELEASE without ciaddr or 54: %s", r.Summary())
		}
	}
	// With one client at a time, latency is exactly the two service times.
	f = newFakeServer()
	f.delay = time.Millisecond
	rep, _ = storm(t, DHCPStorm{Clients: 5}, f.handle)
	if rep.LatencyMs != (Latency{P50: 2, P95: 2, P99: 2, Max: 2, Mean: 2}) {
		t.Fatalf("latency %+v, want 2 ms throughout", rep.LatencyMs)
	}
}

func TestStormRetransmits(t *testing.T) {
	f := newFakeServer()
	f.dropFirst = 1 // lose the first DISCOVER and the first REQUEST of every client
	rep, _ := storm(t, DHCPStorm{Clients: 10, Concurrency: 3}, f.handle)
	if rep.Completed != 10 || rep.Retransmits != 20 {
		t.Fatalf("completed %d retransmits %d: %+v", rep.Completed, rep.Retransmits, rep)
	}
	// One default retransmission interval per step: 2 s, in virtual time.
	if rep.LatencyMs.P50 != 2000 || rep.LatencyMs.Max != 2000 {
		t.Fatalf("latency %+v, want 2000 ms", rep.LatencyMs)
	}
	for _, d := range f.got[dhcpv4.MessageTypeDiscover] {
		if d.ClientHWAddr.String() == ClientMAC(1).String() && d.NumSeconds > 1 {
			t.Fatalf("secs %d", d.NumSeconds)
		}
	}
	// A retransmitted step keeps its xid (RFC 2131 §4.1).
	xids := map[dhcpv4.TransactionID]int{}
	for _, d := range f.got[dhcpv4.MessageTypeDiscover] {
		xids[d.TransactionID]++
	}
	if len(xids) != 10 {
		t.Fatalf("%d xids for 20 DISCOVERs of 10 clients", len(xids))
	}
}

func TestStormNAKs(t *testing.T) {
	f := newFakeServer()
	f.nak = func(mac net.HardwareAddr) string {
		if mac[5]%2 == 1 {
			return "address not available"
		}
		return ""
	}
	rep, _ := storm(t, DHCPStorm{Clients: 20, Concurrency: 4}, f.handle)
	if rep.Completed != 10 || rep.Failed != 10 || rep.NAKs != 10 || rep.Failures[FailNAK] != 10 ||
		rep.NAKReasons["address not available"] != 10 || len(rep.Failures) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	if rep.Retransmits != 0 {
		t.Fatalf("a NAK must end the exchange, not retransmit: %d", rep.Retransmits)
	}
}

func TestStormTimeouts(t *testing.T) {
	t.Run("no offer", func(t *testing.T) {
		f := newFakeServer()
		f.noOffer = true
		rep, took := storm(t, DHCPStorm{Clients: 4, Concurrency: 2, Retries: 2}, f.handle)
		if rep.Failed != 4 || rep.Failures[FailTimeoutOffer] != 4 || rep.Completed != 0 {
			t.Fatalf("report: %+v", rep)
		}
		// 3 sends per client, 1 s apart and 1 s after the last; 2 rounds.
		if n := f.count(dhcpv4.MessageTypeDiscover); n != 12 || rep.Retransmits != 8 || took != 6*time.Second {
			t.Fatalf("%d DISCOVERs, %d retransmits, took %v", n, rep.Retransmits, took)
		}
		if rep.ExchangesPerSec != 0 || rep.LatencyMs != (Latency{}) {
			t.Fatalf("rates without completions: %+v", rep)
		}
	})
	t.Run("no ack", func(t *testing.T) {
		f := newFakeServer()
		f.noAck = true
		rep, _ := storm(t, DHCPStorm{Clients: 3, Concurrency: 3}, f.handle)
		if rep.Failed != 3 || rep.Failures[FailTimeoutAck] != 3 || rep.Offers != 3 {
			t.Fatalf("report: %+v", rep)
		}
		if n := f.count(dhcpv4.MessageTypeRequest); n != 3*(DefaultDHCPRetries+1) {
			t.Fatalf("%d REQUESTs", n)
		}
	})
	t.Run("exchange timeout", func(t *testing.T) {
		// Timeout cuts the exchange before its retries run out.
		f := newFakeServer()
		f.noAck = true
		rep, took := storm(t, DHCPStorm{Clients: 2, Timeout: 2500 * time.Millisecond}, f.handle)
		if rep.Failures[FailTimeoutAck] != 2 || took != 5*time.Second {
			t.Fatalf("took %v: %+v", took, rep)
		}
	})
}

func TestStormDuration(t *testing.T) {
	f := newFakeServer()
	f.noOffer = true
	rep, took := storm(t, DHCPStorm{Clients: 100, Concurrency: 2, Duration: 7 * time.Second}, f.handle)
	if took != 7*time.Second || !strings.Contains(rep.Stopped, "duration") {
		t.Fatalf("took %v, stopped %q", took, rep.Stopped)
	}
	// 5 s per exchange: the first two pairs time out, the next pair is
	// cancelled at 7 s, 94 never start.
	if rep.Failures[FailTimeoutOffer] != 2 || rep.Failures[FailCancelled] != 2 || rep.NotStarted != 96 ||
		rep.Started+rep.NotStarted != 100 {
		t.Fatalf("report: %+v", rep)
	}
}

func TestStormContextCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet()
		f := newFakeServer()
		f.noOffer = true
		go m.serve(f.handle)
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		rep, err := (&DHCPStorm{Clients: 10, Transport: m}).Run(ctx)
		if err != nil || !strings.HasPrefix(rep.Stopped, "cancelled") || rep.Failures[FailCancelled] != 1 || rep.NotStarted != 9 {
			t.Fatalf("%v: %+v", err, rep)
		}
	})
}

func TestStormDuplicates(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		// One address for everybody, no RELEASE: every client after the
		// first is offered and ACKed an address another client holds a
		// lease on.
		f := newFakeServer()
		f.sameAddr = true
		rep, _ := storm(t, DHCPStorm{Clients: 5}, f.handle)
		if rep.Completed != 5 || rep.DuplicateOffers != 4 || rep.DuplicateAcks != 4 || len(rep.Duplicates) != 8 {
			t.Fatalf("report: %+v", rep)
		}
		d := rep.Duplicates[1]
		if d.Kind != "ack" || d.IP != "192.0.2.10" || d.MAC != ClientMAC(2).String() || d.HeldBy != ClientMAC(1).String() || !d.Acked {
			t.Fatalf("duplicate %+v", d)
		}
	})
	t.Run("released", func(t *testing.T) {
		// The same address again after a RELEASE is no duplicate.
		f := newFakeServer()
		f.sameAddr = true
		rep, _ := storm(t, DHCPStorm{Clients: 5, Release: true}, f.handle)
		if rep.Completed != 5 || rep.DuplicateOffers != 0 || rep.DuplicateAcks != 0 {
			t.Fatalf("report: %+v", rep)
		}
	})
	t.Run("offers only", func(t *testing.T) {
		// A server that does not reserve what it offered (dnsmasq):
		// concurrent clients are offered one address, the first REQUEST
		// wins and the others are NAKed; no two ACKs.
		f := newFakeServer()
		f.sameAddr = true
		var mu sync.Mutex
		taken := false
		f.nak = func(net.HardwareAddr) string {
			mu.Lock()
			defer mu.Unlock()
			if taken {
				return "address in use"
			}
			taken = true
			return ""
		}
		rep, _ := storm(t, DHCPStorm{Clients: 4, Concurrency: 4}, f.handle)
		if rep.Completed != 1 || rep.NAKs != 3 || rep.DuplicateOffers != 3 || rep.DuplicateAcks != 0 {
			t.Fatalf("report: %+v", rep)
		}
	})
}

func TestStormStrayReplies(t *testing.T) {
	f := newFakeServer()
	f.strayFirst = true
	rep, _ := storm(t, DHCPStorm{Clients: 6, Concurrency: 3}, f.handle)
	if rep.Completed != 6 || rep.StrayReplies != 12 || rep.Retransmits != 0 {
		t.Fatalf("report: %+v", rep)
	}
}

func TestStormValidate(t *testing.T) {
	cases := []struct {
		s    DHCPStorm
		want []string
	}{
		{DHCPStorm{Clients: 1}, []string{"Iface: required"}},
		// An interface that does not exist: should a case turn valid,
		// it fails to open a socket instead of storming a real network.
		{DHCPStorm{Iface: "nosuchif-bench"}, []string{"Clients: 0"}},
		{DHCPStorm{Iface: "nosuchif-bench", Clients: MaxDHCPClients + 1}, []string{"Clients"}},
		{DHCPStorm{Iface: "nosuchif-bench", Clients: 1, Concurrency: -1, Timeout: -1, Duration: -1, Retransmit: -1, Retries: -1},
			[]string{"Concurrency", "Timeout", "Duration", "Retransmit", "Retries"}},
	}
	for _, c := range cases {
		_, err := c.s.Run(context.Background())
		if err == nil {
			t.Fatalf("%+v: no error", c.s)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not name %q", c.s, err, w)
			}
		}
	}
	m := newMemNet()
	if _, err := (&DHCPStorm{Transport: m}).Run(context.Background()); err == nil {
		t.Fatal("Clients 0 accepted")
	}
	if _, err := m.Recv(make([]byte, 10)); err == nil {
		t.Fatal("Run did not close the Transport after a config error")
	}
	c, err := (&DHCPStorm{Iface: "x", Clients: 3, Concurrency: 50}).config()
	if err != nil || c.Concurrency != 3 || c.Timeout != DefaultDHCPTimeout || c.Retries != DefaultDHCPRetries ||
		c.Retransmit != DefaultDHCPRetransmit || c.Duration != DefaultDHCPDuration {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}

// TestStormAgainstDHCPServer runs the storm against mtftpd's own DHCP
// protocol core (dhcp.Server.Handle, no sockets): a pool of 241 addresses,
// 600 clients with RELEASE at 20 at once.
func TestStormAgainstDHCPServer(t *testing.T) {
	srv := &dhcp.Server{Subnets: []dhcp.Subnet{{
		Prefix:     netip.MustParsePrefix("192.0.2.0/24"),
		RangeStart: netip.MustParseAddr("192.0.2.10"),
		RangeEnd:   netip.MustParseAddr("192.0.2.250"),
	}}}
	in := dhcp.Incoming{IfIndex: 1, IfAddr: serverID, Src: netip.MustParseAddrPort("0.0.0.0:68"), Port: dhcp.PortServer}
	handle := func(req *dhcpv4.DHCPv4) [][]byte {
		out, err := srv.Handle(req, in, time.Now())
		if err != nil {
			panic(err)
		}
		if out == nil {
			return nil
		}
		return [][]byte{bytes.Clone(out.Bytes())}
	}
	for _, pxe := range []bool{false, true} {
		rep, _ := storm(t, DHCPStorm{Clients: 600, Concurrency: 20, Release: true, PXE: pxe}, handle)
		if rep.Completed != 600 || rep.DuplicateOffers != 0 || rep.DuplicateAcks != 0 || rep.NAKs != 0 {
			t.Fatalf("pxe %v: %+v", pxe, rep)
		}
		if measured := processCPU() > 0; (measured && rep.ClientCPUSeconds <= 0) || rep.ClientCPUSeconds > 60 {
			t.Fatalf("pxe %v: the storm's own CPU %v s: not measured", pxe, rep.ClientCPUSeconds)
		}
	}
}

func TestClientMAC(t *testing.T) {
	if got := ClientMAC(1).String(); got != "02:6d:74:00:00:01" {
		t.Fatal(got)
	}
	if got := ClientMAC(MaxDHCPClients).String(); got != "02:6d:74:10:00:00" {
		t.Fatal(got)
	}
}

func TestLatencyOf(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	if l := latencyOf(s); l != (Latency{P50: 50, P95: 95, P99: 99, Max: 100, Mean: 50.5}) {
		t.Fatalf("%+v", l)
	}
	if s[0] != 100*time.Millisecond {
		t.Fatal("latencyOf sorted its argument")
	}
}
