package dhcp

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestNetnsDHCPv6ForgedSourceFlood: Solicits, each from a new forged
// link-local source nobody holds, make every Advertise wait in the kernel
// for neighbour discovery that never completes (RFC 4861: 3 solicitations
// 1 s apart). Those packets are charged to the server socket's send
// buffer; once it was full a blocking send stalled the read loop and an
// honest client got no answer for the whole flood (docs/security.md,
// DHCPv6). During the flood an honest client, retrying as a client does,
// must still get its Advertise.
func TestNetnsDHCPv6ForgedSourceFlood(t *testing.T) {
	nsS, nsC := floodLab(t, "mf6")
	sh(t, "ip", "-n", nsS, "addr", "add", "2001:db8:1::1/64", "dev", "vs", "nodad")
	waitLinkLocal(t, nsC, "vc")
	waitLinkLocal(t, nsS, "vs")
	startHelper(t, nsS, "TestNetnsServer6FloodHelper", "MTFTPD_DHCP6_FLOOD_HELPER", "dhcp6 server listening")
	vc, err := netIndex(nsC, "vc")
	if err != nil {
		t.Fatal(err)
	}

	// 200 forged Solicits a second for 10 s: 600 Advertises waiting on
	// neighbour discovery at any time, more than a default 212992-byte
	// send buffer holds (~250: full after ~1.3 s).
	const floodN, floodPPS = 2000, 200
	floodErr := make(chan error, 1)
	go func() {
		floodErr <- netlab.Enter(nsC, func() error { return floodForged(vc, floodN, floodPPS) })
	}()

	// The honest client starts once the buffer would be full and asks
	// during the flood (RFC 8415's Solicit retransmission starts at 1 s).
	time.Sleep(3 * time.Second)
	honestProbes(t, nsC, "udp6", &net.UDPAddr{Port: 5460}, func(c *net.UDPConn, id int) bool {
		return honestAsk(c, floodSolicit(id), &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: "vc"},
			func(b []byte, m []byte) bool { return len(b) >= 4 && b[0] == 2 && string(b[1:4]) == string(m[1:4]) })
	})
	if err := <-floodErr; err != nil {
		t.Fatal(err)
	}
}

// TestNetnsDHCPv4ForgedInformFlood is the DHCPv4 side: INFORMs from
// forged on-link sources (ciaddr = source, as the server demands) make
// each ACK wait in ARP for an address nobody holds. An honest client's
// INFORM must still be answered during the flood.
func TestNetnsDHCPv4ForgedInformFlood(t *testing.T) {
	nsS, nsC := floodLab(t, "mf4")
	sh(t, "ip", "-n", nsS, "addr", "add", "192.0.2.1/24", "dev", "vs")
	sh(t, "ip", "-n", nsC, "addr", "add", "192.0.2.2/24", "dev", "vc")
	startHelper(t, nsS, "TestNetnsServerHelper", "MTFTPD_DHCP_HELPER", "dhcp server listening")

	// 200 a second for 10 s from 192.0.2.10-249 in turn: ~600 ACKs
	// waiting on ARP at any time, as in the DHCPv6 test.
	floodErr := make(chan error, 1)
	go func() {
		floodErr <- netlab.Enter(nsC, func() error { return floodInforms(2000, 200) })
	}()
	time.Sleep(3 * time.Second)
	honestProbes(t, nsC, "udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 68}, func(c *net.UDPConn, id int) bool {
		m := floodInform(net.IPv4(192, 0, 2, 2), uint32(id))
		return honestAsk(c, m, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 67},
			func(b []byte, m []byte) bool { return len(b) >= 8 && b[0] == 2 && string(b[4:8]) == string(m[4:8]) })
	})
	if err := <-floodErr; err != nil {
		t.Fatal(err)
	}
}

// honestProbes asks three times from a socket on laddr in ns, each time
// retrying up to three times (ask waits 2 s for its answer), and fails
// the test for each ask never answered.
func honestProbes(t *testing.T, ns, network string, laddr *net.UDPAddr, ask func(c *net.UDPConn, id int) bool) {
	t.Helper()
	var answered []int
	err := netlab.Enter(ns, func() error {
		c, err := net.ListenUDP(network, laddr)
		if err != nil {
			return err
		}
		defer c.Close()
		for probe := range 3 {
			tries := 0
			for try := range 3 {
				if ask(c, 1<<20+probe*8+try) {
					tries = try + 1
					break
				}
			}
			answered = append(answered, tries)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("honest probes (tries until answered, 0 = never): %v", answered)
	for i, n := range answered {
		if n == 0 {
			t.Errorf("honest request %d got no answer in 3 tries 2 s apart during the forged-source flood", i)
		}
	}
}

// honestAsk sends m from c to dst and reports whether an answer (match)
// came back within 2 s.
func honestAsk(c *net.UDPConn, m []byte, dst *net.UDPAddr, match func(b, m []byte) bool) bool {
	if _, err := c.WriteToUDP(m, dst); err != nil {
		return false
	}
	deadline := time.Now().Add(2 * time.Second)
	c.SetReadDeadline(deadline)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return false
		}
		if match(buf[:n], m) {
			return true
		}
	}
	return false
}

// floodInforms sends n INFORMs at pps, from 192.0.2.10-249 in turn
// (addresses the host does not hold), ciaddr = source.
func floodInforms(n, pps int) error {
	tick := time.NewTicker(time.Second / time.Duration(pps))
	defer tick.Stop()
	dst := &unix.SockaddrInet4{Port: 67, Addr: [4]byte{192, 0, 2, 1}}
	sent := 0
	for i := range n {
		<-tick.C
		src := &unix.SockaddrInet4{Port: 68, Addr: [4]byte{192, 0, 2, byte(10 + i%240)}}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		// IP_TRANSPARENT: the route lookup takes a source the host
		// does not hold.
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		if err == nil {
			err = unix.Bind(fd, src)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("forged INFORM %d: %w", i, err)
		}
		if unix.Sendto(fd, floodInform(net.IP(src.Addr[:]), uint32(i)), 0, dst) == nil {
			sent++
		}
		unix.Close(fd)
	}
	return floodSent(sent, n)
}

// floodSent fails a flood most of whose datagrams the kernel refused: it
// tested nothing.
func floodSent(sent, n int) error {
	if sent < n/2 {
		return fmt.Errorf("only %d of %d forged requests sent", sent, n)
	}
	return nil
}

// floodInform is a DHCPINFORM from ciaddr with transaction id xid.
func floodInform(ciaddr net.IP, xid uint32) []byte {
	m, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(ciaddr),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{byte(xid >> 24), byte(xid >> 16), byte(xid >> 8), byte(xid)}),
		dhcpv4.WithHwAddr(net.HardwareAddr{2, 0xaa, 0, 0, byte(xid >> 8), byte(xid)}))
	if err != nil {
		panic(err)
	}
	return m.ToBytes()
}

// floodLab makes two namespaces joined by a veth pair (vs in the
// server's, vc in the client's, both up), removed at cleanup.
func floodLab(t *testing.T, prefix string) (nsS, nsC string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	needRoot(t, "ip")
	testutil.Heavy(t)
	base := fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	nsS, nsC = base+"s", base+"c"
	for _, ns := range []string{nsS, nsC} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	}
	sh(t, "ip", "-n", nsS, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", nsC)
	sh(t, "ip", "-n", nsS, "link", "set", "vs", "up")
	sh(t, "ip", "-n", nsC, "link", "set", "vc", "up")
	return nsS, nsC
}

// startHelper runs test helper in ns (env set to a lease file path) until
// cleanup, and waits (bounded) for its line ready. Its output is read as
// it comes (never left to fill the pipe, which would stall the server)
// and logged at the end.
func startHelper(t *testing.T, ns, helper, env, ready string) {
	t.Helper()
	srv := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+helper+"$", "-test.v")
	srv.Env = append(os.Environ(), env+"="+filepath.Join(t.TempDir(), "leases"))
	stdout, _ := srv.StdoutPipe()
	srv.Stderr = srv.Stdout
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	up := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		once := sync.OnceFunc(func() { close(up) })
		for sc.Scan() {
			if !strings.Contains(sc.Text(), `"level":"debug"`) {
				out.WriteString(sc.Text() + "\n")
			}
			if strings.Contains(sc.Text(), ready) {
				once()
			}
		}
	}()
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
		<-readDone
		t.Logf("server:\n%s", out.String())
	})
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatal("server helper did not start")
	}
}

// floodForged sends n Solicits at pps, each from its own forged source
// fe80::dead:0:<i> port 546 on interface ifidx (IPV6_FREEBIND lets a
// socket bind an address the host does not hold).
func floodForged(ifidx, n, pps int) error {
	tick := time.NewTicker(time.Second / time.Duration(pps))
	defer tick.Stop()
	dst := &unix.SockaddrInet6{Port: 547, ZoneId: uint32(ifidx), Addr: netip.MustParseAddr("ff02::1:2").As16()}
	sent := 0
	for i := range n {
		<-tick.C
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		src := &unix.SockaddrInet6{Port: 546, ZoneId: uint32(ifidx),
			Addr: [16]byte{0xfe, 0x80, 8: 0xde, 9: 0xad, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}}
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		if err == nil {
			err = unix.Bind(fd, src)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("forged Solicit %d: %w", i, err)
		}
		// A send may fail once the (host-wide) neighbour table is
		// full of the server's unresolved entries: the flood goes on.
		if unix.Sendto(fd, floodSolicit(i), 0, dst) == nil {
			sent++
		}
		unix.Close(fd)
	}
	return floodSent(sent, n)
}

// floodSolicit is a minimal Solicit: transaction id and DUID-LL from id,
// one IA_NA, an ORO asking for option 59, architecture 7 (x64 UEFI,
// option 61) so that a boot rule matches.
func floodSolicit(id int) []byte {
	b := []byte{1, byte(id >> 16), byte(id >> 8), byte(id)}
	duid := []byte{0, 3, 0, 1, 0x02, 0xaa, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	b = append(b, 0, 1, 0, byte(len(duid)))
	b = append(b, duid...)
	b = append(b, 0, 3, 0, 12, byte(id>>24), byte(id>>16), byte(id>>8), byte(id), 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0, 61, 0, 2, 0, 7)
	return append(b, 0, 6, 0, 2, 0, 59)
}

// netIndex is dev's interface index inside namespace ns.
func netIndex(ns, dev string) (int, error) {
	idx := 0
	err := netlab.Enter(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			idx = ifi.Index
		}
		return err
	})
	return idx, err
}

// TestNetnsServer6FloodHelper is the server side of
// TestNetnsDHCPv6ForgedSourceFlood, run by it inside the server namespace:
// no debug lines (one per Solicit would be a flood of its own).
func TestNetnsServer6FloodHelper(t *testing.T) {
	leases := os.Getenv("MTFTPD_DHCP6_FLOOD_HELPER")
	if leases == "" {
		t.Skip("helper process of TestNetnsDHCPv6ForgedSourceFlood")
	}
	s := &Server6{
		Interfaces: []string{"vs"}, Prefix: netip.MustParsePrefix("2001:db8:1::/64"),
		RangeStart: netip.MustParseAddr("2001:db8:1::1:0"), RangeEnd: netip.MustParseAddr("2001:db8:1::1:ffff"),
		LeaseFile: leases, Log: zerolog.New(os.Stdout).Level(zerolog.InfoLevel),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := s.Serve(ctx, nil); err != nil {
		t.Fatal(err)
	}
	fmt.Println("counters:", s.Counters.Snapshot())
}
