package tftp

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestNetnsSinglePortForgedSourceFlood: RRQs, each from a new forged
// link-local source nobody holds, make every first block wait in the
// kernel for neighbour discovery that never completes (3 solicitations
// 1 s apart), charged to the listening socket's send buffer. A loop that
// waited for room stalled every transfer it serves once the buffer was
// full (docs/security.md, "TFTP"); an honest RRQ must still be answered
// during the flood.
func TestNetnsSinglePortForgedSourceFlood(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip not installed (scripts/test-deps.sh installs it)")
	}
	testutil.Heavy(t)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	base := fmt.Sprintf("tf6%d", os.Getpid()%100000)
	nsS, nsC := base+"s", base+"c"
	for _, ns := range []string{nsS, nsC} {
		run("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	}
	run("-n", nsS, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", nsC)
	run("-n", nsS, "addr", "add", "2001:db8:1::1/64", "dev", "vs", "nodad")
	run("-n", nsC, "addr", "add", "2001:db8:1::2/64", "dev", "vc", "nodad")
	run("-n", nsS, "link", "set", "vs", "up")
	run("-n", nsC, "link", "set", "vc", "up")

	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), testData(100_000, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var pc *net.UDPConn
	if err := netlab.Enter(nsS, func() (err error) {
		pc, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 69})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Files: store, SinglePort: true, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeSinglePort(ctx, []*net.UDPConn{pc}) }()
	defer func() {
		cancel()
		<-done
		t.Logf("counters: %v", srv.Counters.Snapshot())
	}()

	// 200 forged RRQs a second for 10 s, each first block (and its
	// retransmissions) waiting ~3 s on neighbour discovery: far more
	// than a default 212992-byte send buffer holds.
	rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).Marshal(nil)
	floodErr := make(chan error, 1)
	go func() {
		floodErr <- netlab.Enter(nsC, func() error {
			ifi, err := net.InterfaceByName("vc")
			if err != nil {
				return err
			}
			return floodRRQs(ifi.Index, rrq, 2000, 200)
		})
	}()
	time.Sleep(3 * time.Second)
	var answered []int
	err = netlab.Enter(nsC, func() error {
		buf := make([]byte, 2048)
		for range 3 {
			// A socket (port) of its own: a transfer of its own.
			c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("2001:db8:1::2")})
			if err != nil {
				return err
			}
			tries := 0
			for try := range 3 {
				if _, err := c.WriteToUDP(rrq, &net.UDPAddr{IP: net.ParseIP("2001:db8:1::1"), Port: 69}); err != nil {
					c.Close()
					return err
				}
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, _, err := c.ReadFromUDP(buf); err == nil && n >= 2 && buf[1] == byte(OpDATA) {
					tries = try + 1
					break
				}
			}
			c.Close()
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
	t.Logf("honest RRQs (tries until answered, 0 = never): %v", answered)
	for i, n := range answered {
		if n == 0 {
			t.Errorf("honest RRQ %d got no DATA in 3 tries 2 s apart during the forged-source flood", i)
		}
	}
}

// floodRRQs sends n RRQs at pps to [2001:db8:1::1]:69, each from its own
// forged source fe80::dead:0:<i> port 2000 on interface ifidx
// (IPV6_FREEBIND and IPV6_TRANSPARENT: an address the host does not
// hold). Most must leave, or the flood tested nothing.
func floodRRQs(ifidx int, rrq []byte, n, pps int) error {
	tick := time.NewTicker(time.Second / time.Duration(pps))
	defer tick.Stop()
	dst := &unix.SockaddrInet6{Port: 69, Addr: [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: 1}}
	sent := 0
	for i := range n {
		<-tick.C
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		src := &unix.SockaddrInet6{Port: 2000, ZoneId: uint32(ifidx),
			Addr: [16]byte{0xfe, 0x80, 8: 0xde, 9: 0xad, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}}
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		}
		if err == nil {
			err = unix.Bind(fd, src)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("forged RRQ %d: %w", i, err)
		}
		if unix.Sendto(fd, rrq, 0, dst) == nil {
			sent++
		}
		unix.Close(fd)
	}
	if sent < n/2 {
		return fmt.Errorf("only %d of %d forged RRQs sent", sent, n)
	}
	return nil
}
