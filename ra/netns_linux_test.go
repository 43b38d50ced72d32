package ra

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv6"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// TestNetnsAdvertiser runs the advertiser on real ICMPv6 sockets across a
// veth pair between two fresh network namespaces: a client's router
// solicitation gets an advertisement with M=0, O=0, lifetime 0, no prefix
// and hop limit 255 from a link-local address; once the client's side
// advertises as a router, solicitations go unanswered.
func TestNetnsAdvertiser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for network namespaces and raw ICMPv6 sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip (iproute2) is missing: %v", err)
	}
	base := fmt.Sprintf("mra%d", os.Getpid()%100000)
	nsS, nsC := base+"s", base+"c"
	for _, ns := range []string{nsS, nsC} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", nsS, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", nsC)
	// No duplicate address detection: the link-local addresses are usable
	// at once.
	run(t, "ip", "netns", "exec", nsS, "sysctl", "-qw", "net.ipv6.conf.vs.accept_dad=0")
	run(t, "ip", "netns", "exec", nsC, "sysctl", "-qw", "net.ipv6.conf.vc.accept_dad=0")
	run(t, "ip", "-n", nsS, "link", "set", "vs", "up")
	run(t, "ip", "-n", nsC, "link", "set", "vc", "up")
	waitLinkLocal(t, nsS, "vs")
	waitLinkLocal(t, nsC, "vc")

	var ifs []*Iface
	if err := netlab.Enter(nsS, func() (err error) { ifs, err = Open([]string{"vs"}, zerolog.Nop()); return err }); err != nil {
		t.Fatalf("Open: %v", err)
	}
	a := &Advertiser{Ifaces: ifs, Listen: 200 * time.Millisecond, Log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() { done <- a.Serve(context.Background()) }()
	t.Cleanup(func() {
		a.Shutdown(context.Background())
		<-done
	})

	var c *ndp.Conn
	if err := netlab.Enter(nsC, func() error {
		ifi, err := net.InterfaceByName("vc")
		if err != nil {
			return err
		}
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			return err
		}
		return c.SetControlMessage(ipv6.FlagHopLimit, true)
	}); err != nil {
		t.Fatalf("client socket: %v", err)
	}
	defer c.Close()
	// The server sends solicitations while it listens: read past them.
	waitState(t, ifs[0], Answering)

	ra, cm, src := solicit(t, c)
	if ra == nil {
		t.Fatal("no router advertisement answered the solicitation")
	}
	if !src.IsLinkLocalUnicast() || cm == nil || cm.HopLimit != hopLimit {
		t.Errorf("advertisement from %v hop limit %v, want a link-local source and 255", src, cm)
	}
	if ra.ManagedConfiguration || ra.OtherConfiguration || ra.RouterLifetime != 0 {
		t.Errorf("advertisement M=%v O=%v lifetime %v, want false false 0", ra.ManagedConfiguration, ra.OtherConfiguration, ra.RouterLifetime)
	}
	for _, o := range ra.Options {
		if _, ok := o.(*ndp.PrefixInformation); ok {
			t.Errorf("advertisement carries a prefix: %+v", o)
		}
	}

	// Now another router on the link: the advertiser falls silent.
	if err := c.WriteTo(&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: 1800 * time.Second}, nil,
		allNodes); err != nil {
		t.Fatalf("sending the other router's advertisement: %v", err)
	}
	waitState(t, ifs[0], Stopped)
	if ra, _, _ := solicit(t, c); ra != nil {
		t.Fatalf("advertisement %+v after another router advertised, want none", ra)
	}
}

// solicit sends one router solicitation and returns the first
// advertisement that arrives within a second, or nil.
func solicit(t *testing.T, c *ndp.Conn) (*ndp.RouterAdvertisement, *ipv6.ControlMessage, netip.Addr) {
	t.Helper()
	if err := c.WriteTo(&ndp.RouterSolicitation{}, nil, allRouters); err != nil {
		t.Fatalf("sending a router solicitation: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	for range 100 {
		m, cm, src, err := c.ReadFrom()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil, netip.Addr{}
		}
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		if ra, ok := m.(*ndp.RouterAdvertisement); ok {
			return ra, cm, src
		}
	}
	t.Fatal("100 packets without an advertisement")
	return nil, nil, netip.Addr{}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// waitLinkLocal waits (bounded) until dev in ns has a link-local address.
func waitLinkLocal(t *testing.T, ns, dev string) {
	t.Helper()
	for range 100 {
		out, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link").Output()
		if strings.Contains(string(out), "inet6") && !strings.Contains(string(out), "tentative") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s in %s has no usable link-local address", dev, ns)
}
