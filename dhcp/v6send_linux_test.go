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
	if os.Getuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	needRoot(t, "ip")
	testutil.Heavy(t)
	base := fmt.Sprintf("mf6%d", os.Getpid()%100000)
	nsS, nsC := base+"s", base+"c"
	for _, ns := range []string{nsS, nsC} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	}
	sh(t, "ip", "-n", nsS, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", nsC)
	sh(t, "ip", "-n", nsS, "addr", "add", "2001:db8:1::1/64", "dev", "vs", "nodad")
	sh(t, "ip", "-n", nsS, "link", "set", "vs", "up")
	sh(t, "ip", "-n", nsC, "link", "set", "vc", "up")
	waitLinkLocal(t, nsC, "vc")
	waitLinkLocal(t, nsS, "vs")

	srv := exec.Command("ip", "netns", "exec", nsS, os.Args[0], "-test.run=^TestNetnsServer6FloodHelper$", "-test.v")
	srv.Env = append(os.Environ(), "MTFTPD_DHCP6_FLOOD_HELPER="+filepath.Join(t.TempDir(), "leases6"))
	stdout, _ := srv.StdoutPipe()
	srv.Stderr = srv.Stdout
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The server's output is read as it comes (never left to fill the
	// pipe, which would stall the server) and logged at the end.
	var outMu sync.Mutex
	var out strings.Builder
	ready := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		once := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			outMu.Lock()
			out.WriteString(sc.Text() + "\n")
			outMu.Unlock()
			if strings.Contains(sc.Text(), "dhcp6 server listening") {
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
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("server helper did not start")
	}
	vc, err := netIndex(nsC, "vc")
	if err != nil {
		t.Fatal(err)
	}

	// 200 forged Solicits a second for 10 s: 600 Advertises waiting on
	// neighbour discovery at any time, more than a default 212992-byte
	// send buffer holds (the reviewer's measurement: stalled within 2 s).
	const floodN, floodPPS = 2000, 200
	floodErr := make(chan error, 1)
	go func() {
		floodErr <- netlab.Enter(nsC, func() error { return floodForged(vc, floodN, floodPPS) })
	}()

	// The honest client starts once the buffer would be full and asks
	// three times during the flood, each time retrying up to three times
	// 2 s apart (RFC 8415's Solicit retransmission starts at 1 s).
	time.Sleep(3 * time.Second)
	var answered []int
	err = netlab.Enter(nsC, func() error {
		c, err := net.ListenUDP("udp6", &net.UDPAddr{Port: 5460})
		if err != nil {
			return err
		}
		defer c.Close()
		for probe := range 3 {
			tries := 0
			for try := range 3 {
				tries = try + 1
				if honestSolicit(c, 1<<30+probe*8+try) {
					break
				}
				tries = 0
			}
			answered = append(answered, tries)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-floodErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("honest probes (tries until answered, 0 = never): %v", answered)
	for i, n := range answered {
		if n == 0 {
			t.Errorf("honest Solicit %d got no Advertise in 3 tries 2 s apart during the forged-source flood", i)
		}
	}
}

// honestSolicit sends one Solicit from c to ff02::1:2 on vc and reports
// whether an Advertise for it came back within 2 s.
func honestSolicit(c *net.UDPConn, id int) bool {
	m := floodSolicit(id)
	if _, err := c.WriteToUDP(m, &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: "vc"}); err != nil {
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
		if n >= 4 && buf[0] == 2 && string(buf[1:4]) == string(m[1:4]) {
			return true
		}
	}
	return false
}

// floodForged sends n Solicits at pps, each from its own forged source
// fe80::dead:0:<i> port 546 on interface ifidx (IPV6_FREEBIND lets a
// socket bind an address the host does not hold).
func floodForged(ifidx, n, pps int) error {
	tick := time.NewTicker(time.Second / time.Duration(pps))
	defer tick.Stop()
	dst := &unix.SockaddrInet6{Port: 547, ZoneId: uint32(ifidx), Addr: netip.MustParseAddr("ff02::1:2").As16()}
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
		unix.Sendto(fd, floodSolicit(i), 0, dst)
		unix.Close(fd)
	}
	return nil
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
// warnings only (a line per Solicit would be a flood of its own).
func TestNetnsServer6FloodHelper(t *testing.T) {
	leases := os.Getenv("MTFTPD_DHCP6_FLOOD_HELPER")
	if leases == "" {
		t.Skip("helper process of TestNetnsDHCPv6ForgedSourceFlood")
	}
	s := &Server6{
		Interfaces: []string{"vs"}, Prefix: netip.MustParsePrefix("2001:db8:1::/64"),
		RangeStart: netip.MustParseAddr("2001:db8:1::1:0"), RangeEnd: netip.MustParseAddr("2001:db8:1::ff:ffff"),
		LeaseFile: leases, Log: zerolog.New(os.Stdout).Level(zerolog.InfoLevel),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := s.Serve(ctx, nil); err != nil {
		t.Fatal(err)
	}
	fmt.Println("counters:", s.Counters.Snapshot())
}
