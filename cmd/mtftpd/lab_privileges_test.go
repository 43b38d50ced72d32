//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/privdrop"
)

// TestPrivilegeDropBeforeServing is the attack of issue 13 finding 8, in
// the lab: mtftpd started as root with server.user = nobody, TFTP (69),
// HTTP (80), DHCP (67) and DHCPv6 (547) on, and an origin-backed root. Before, the
// services served requests as root until the drop, and the origin cache's
// sub-directories were created as root before it, so every fetch after
// it failed (permission denied). Now every port is opened, then
// privileges dropped, then the directories created by nobody, and only
// then a request read: the log says "privileges dropped" before any
// service listens, fetches over TFTP and HTTP work, and the cached files
// and the lease files belong to nobody, and a DHCPv6 Solicit is
// answered. The raw ICMPv6 socket of dhcp.router_advert (CAP_NET_RAW) is
// opened before the drop too and answers a router solicitation after it
// (M=1: DHCPv6 serves the link).
func TestPrivilegeDropBeforeServing(t *testing.T) {
	l := netlab.New(t, netlab.Options{Clients: 1, IPv6: true}) // skips unless root
	id, err := privdrop.Lookup("nobody", "")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	// The origin, on the server namespace's loopback.
	payload := bytes.Repeat([]byte("pxelinux "), 7000)
	var origin *httptest.Server
	err = netlab.Enter(l.NS("srv"), func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		origin = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/boot/pxelinux.0" && r.URL.Path != "/boot/images/ks.cfg" {
				http.NotFound(w, r)
				return
			}
			w.Write(payload)
		}))
		origin.Listener.Close()
		origin.Listener = ln
		origin.Start()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()

	base := worldDir(t)
	cache, state := filepath.Join(base, "cache"), filepath.Join(base, "state")
	for _, d := range []string{cache, state} {
		os.Mkdir(d, 0o755)
		os.Chown(d, id.UID, id.GID) // what the admin prepares (or systemd's CacheDirectory=/StateDirectory=)
	}
	cfg := filepath.Join(base, "mtftpd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[tftp]
listen = "%[1]s:69"
root = "%[2]s/boot/"
[http]
listen = "%[1]s:80"
[mtftp]
enabled = false
[origin]
cache_dir = %[3]q
[dhcp]
mode = "server"
interfaces = ["eth0"]
lease_file = %[4]q
[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.10-192.0.2.20"
[dhcp6]
enabled = true
interfaces = ["eth0"]
prefix = "2001:db8:1::/64"
range = "2001:db8:1::100-2001:db8:1::1ff"
lease_file = %[5]q
[server]
user = "nobody"
[log]
format = "json"
`, netlab.ServerAddr, origin.URL, cache, filepath.Join(state, "leases.json"), filepath.Join(state, "leases6"))), 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs syncBuffer
	srv := l.Command(ctx, "srv", bin, "serve", "--config", cfg)
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	out := filepath.Join(base, "p")
	var got []byte
	for i := 0; i < 100; i++ {
		o, err := l.Run(ctx, netlab.Client(1), bin, "get", "--retries", "1", "--timeout", "200ms", "-o", out, netlab.ServerAddr+":69", "pxelinux.0")
		if err == nil {
			got, _ = os.ReadFile(out)
			break
		}
		if strings.Contains(o, "tftp error") {
			t.Fatalf("TFTP fetch through the origin after the drop: %s\nserver log:\n%s", o, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("TFTP fetch through the origin: %d bytes, want %d\nserver log:\n%s", len(got), len(payload), logs.String())
	}
	body, err := l.Run(ctx, netlab.Client(1), "curl", "-sS", "--fail", "http://"+netlab.ServerAddr+"/images/ks.cfg")
	if err != nil || body != string(payload) {
		t.Fatalf("HTTP fetch through the origin: %v, %d bytes\nserver log:\n%s", err, len(body), logs.String())
	}
	c := dhcpSocketIn(t, l.NS(netlab.Client(1)))
	if _, err := doraOnce(c, net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}); err != nil {
		t.Fatalf("DHCP after the drop: %v\nserver log:\n%s", err, logs.String())
	}
	requireRouterAdvert(t, l.NS(netlab.Client(1)), true, logs.String) // [dhcp6] serves eth0: M=1
	if ip := solicit6(t, l.NS(netlab.Client(1))); !netip.MustParsePrefix("2001:db8:1::/64").Contains(ip) {
		t.Fatalf("DHCPv6 after the drop: Advertise of %v\nserver log:\n%s", ip, logs.String())
	}

	// Owned by nobody: what the origin cache wrote, and the lease file.
	var owned []string
	filepath.Walk(cache, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != cache {
			if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != uint32(id.UID) {
				t.Errorf("%s belongs to uid %d, want nobody (%d)", p, uid, id.UID)
			}
			owned = append(owned, p)
		}
		return nil
	})
	if len(owned) < 5 { // host dir, files/, meta/, tmp/, the files
		t.Errorf("cache holds only %v", owned)
	}
	for _, f := range []string{"leases.json", "leases6"} {
		if st, err := os.Stat(filepath.Join(state, f)); err != nil || st.Sys().(*syscall.Stat_t).Uid != uint32(id.UID) {
			t.Errorf("lease file %s: %v, %v; want it written by nobody", f, err, st)
		}
	}

	// Nothing listened (so nothing was read) before the drop.
	dropped := -1
	var order []string
	for i, line := range strings.Split(logs.String(), "\n") {
		var e struct{ Message string }
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		switch {
		case strings.Contains(e.Message, "privileges dropped"):
			dropped = i
		case strings.Contains(e.Message, "listening"):
			order = append(order, fmt.Sprintf("%d:%s", i, e.Message))
			if dropped < 0 {
				t.Errorf("%q logged before the privileges were dropped", e.Message)
			}
		}
	}
	if dropped < 0 || len(order) < 3 {
		t.Fatalf("drop at line %d, services listening: %v\n%s", dropped, order, logs.String())
	}
}

// solicit6 sends a DHCPv6 Solicit from eth0 of namespace ns to ff02::1:2
// (bounded: five tries a second apart) and returns the address the
// Advertise offers.
func solicit6(t *testing.T, ns string) netip.Addr {
	t.Helper()
	var c *net.UDPConn
	var mac net.HardwareAddr
	if err := netlab.Enter(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: dhcp.PortClient6, Zone: "eth0"})
		return err
	}); err != nil {
		t.Fatalf("DHCPv6 client socket in %s: %v", ns, err)
	}
	defer c.Close()
	// A netboot client's Solicit (x64 UEFI, asking for the boot URL):
	// mtftpd answers no other.
	sol, err := dhcpv6.NewSolicit(mac, dhcpv6.WithArchType(iana.EFI_X86_64), dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		c.WriteTo(sol.ToBytes(), &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: dhcp.PortServer6, Zone: "eth0"})
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			continue
		}
		adv, err := dhcpv6.MessageFromBytes(buf[:n])
		if err != nil || adv.TransactionID != sol.TransactionID {
			continue
		}
		if ia := adv.Options.OneIANA(); ia != nil && len(ia.Options.Addresses()) > 0 {
			a, _ := netip.AddrFromSlice(ia.Options.Addresses()[0].IPv6Addr)
			return a
		}
		t.Fatalf("Advertise without an address: %v", adv)
	}
	t.Fatal("no DHCPv6 Advertise in 5 s")
	return netip.Addr{}
}
