//go:build linux

package main

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// requireRouterAdvert solicits from eth0 of namespace ns (bounded: five
// tries a second apart) and fails t unless an advertisement with router
// lifetime 0 answers, with M=O=managed (true where DHCPv6 serves the
// link, §14.4): the advertisement socket serve opened before its
// privilege drop works after it (docs/protocols.md §13).
func requireRouterAdvert(t *testing.T, ns string, managed bool, logs func() string) {
	t.Helper()
	for i := 0; !strings.Contains(logs(), "no router advertises here"); i++ {
		if i == 100 {
			t.Fatalf("serve never started answering router solicitations:\n%s", logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var c *ndp.Conn
	var cm *ipv6.ControlMessage
	if err := netlab.Enter(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err == nil {
			cm = &ipv6.ControlMessage{HopLimit: ndp.HopLimit, IfIndex: ifi.Index}
			c, _, err = ndp.Listen(ifi, ndp.Unspecified)
		}
		return err
	}); err != nil {
		t.Fatalf("ICMPv6 socket in %s: %v", ns, err)
	}
	defer c.Close()
	for range 5 {
		// Sent from inside ns: the destination's zone "eth0" is turned
		// into an interface index in the sending thread's namespace.
		if err := netlab.Enter(ns, func() error {
			return c.WriteTo(&ndp.RouterSolicitation{}, cm, netip.MustParseAddr("ff02::2"))
		}); err != nil {
			t.Fatalf("router solicitation: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			m, _, _, err := c.ReadFrom()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ra, ok := m.(*ndp.RouterAdvertisement); ok {
				if ra.ManagedConfiguration != managed || ra.OtherConfiguration != managed || ra.RouterLifetime != 0 {
					t.Fatalf("advertisement M=%v O=%v lifetime %v, want %v %v 0", ra.ManagedConfiguration, ra.OtherConfiguration, ra.RouterLifetime, managed, managed)
				}
				return
			}
		}
	}
	t.Fatalf("no router advertisement answered 5 solicitations:\n%s", logs())
}
