//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/netlab"
)

// dhcpSocketIn opens 0.0.0.0:68 on eth0 of namespace ns (a full name)
// with SO_BROADCAST: a DHCP client's socket inside the lab.
func dhcpSocketIn(t *testing.T, ns string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := netlab.Enter(ns, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1),
					unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "eth0"))
			})
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
		if err == nil {
			c = pc.(*net.UDPConn)
		}
		return err
	})
	if err != nil {
		t.Fatalf("dhcp socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dora runs one DISCOVER → OFFER → REQUEST → ACK for mac over c, each step
// with a short wait; it returns the ACKed address or an error (the server
// may be down: that is the point).
func doraOnce(c *net.UDPConn, mac net.HardwareAddr) (netip.Addr, error) {
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	wait := func(xid dhcpv4.TransactionID, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
		buf := make([]byte, 1500)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return nil, err
			}
			p, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || p.TransactionID != xid || p.ClientHWAddr.String() != mac.String() {
				continue
			}
			if p.MessageType() == dhcpv4.MessageTypeNak {
				return nil, fmt.Errorf("NAK: %s", p.Message())
			}
			if p.MessageType() == want {
				return p, nil
			}
		}
	}
	d, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
	if err != nil {
		return netip.Addr{}, err
	}
	if _, err := c.WriteToUDP(d.ToBytes(), bcast); err != nil {
		return netip.Addr{}, err
	}
	offer, err := wait(d.TransactionID, dhcpv4.MessageTypeOffer)
	if err != nil {
		return netip.Addr{}, err
	}
	r, err := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithBroadcast(true))
	if err != nil {
		return netip.Addr{}, err
	}
	if _, err := c.WriteToUDP(r.ToBytes(), bcast); err != nil {
		return netip.Addr{}, err
	}
	ack, err := wait(r.TransactionID, dhcpv4.MessageTypeAck)
	if err != nil {
		return netip.Addr{}, err
	}
	ip, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	return ip, nil
}

// TestLabLeasesSurvivePowerCuts: while a DHCP storm (`mtftpd bench dhcp`)
// runs from one client namespace and a client of the test's own takes
// leases from another, the server is killed with SIGKILL at random moments
// (10 times) and restarted. Every lease whose ACK reached the test's
// client is in the lease journal after the last restart, with its
// address, and the journal reads each time: at most a torn last append
// (whose ACKs never left) is dropped, never reported corrupt.
func TestLabLeasesSurvivePowerCuts(t *testing.T) {
	l := netlab.New(t, netlab.Options{Clients: 2, NoAddr: true}) // skips unless root
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases.json")
	cfg := filepath.Join(dir, "mtftpd.toml")
	os.MkdirAll(filepath.Join(dir, "root"), 0o755)
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[tftp]
listen = "%s:69"
root = %q
[http]
listen = ""
[mtftp]
enabled = false
[dhcp]
mode = "server"
interfaces = ["eth0"]
lease_file = %q
[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.10-192.0.2.250"
lease_time = "1h"
[log]
format = "json"
`, netlab.ServerAddr, filepath.Join(dir, "root"), leases)), 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var logs syncBuffer
	start := func() *exec.Cmd {
		srv := l.Command(ctx, "srv", bin, "serve", "--config", cfg)
		srv.Stderr = &logs
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		return srv
	}
	// The storm: bench's own MACs (02:6d:74:...), 200 clients, no RELEASE.
	storm := l.Command(ctx, netlab.Client(2), bin, "bench", "dhcp", "--iface", "eth0", "--clients", "200",
		"--concurrency", "8", "--duration", "2m", "--timeout", "3s")
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { storm.Process.Kill(); storm.Wait() }()

	c := dhcpSocketIn(t, l.NS(netlab.Client(1)))
	acked := map[string]netip.Addr{}
	rng := rand.New(rand.NewPCG(5, 5))
	next := 0
	for kill := range 10 {
		srv := start()
		// Take leases for a random while, then pull the plug mid-storm.
		until := time.Now().Add(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		for time.Now().Before(until) {
			mac := net.HardwareAddr{0x02, 0xaa, 0, 0, byte(next >> 8), byte(next)}
			if ip, err := doraOnce(c, mac); err == nil {
				acked[mac.String()] = ip
				next++
			}
		}
		srv.Process.Signal(syscall.SIGKILL)
		srv.Wait()
		if strings.Contains(logs.String(), "corrupt") {
			t.Fatalf("after kill %d the lease file was reported corrupt:\n%s", kill, logs.String())
		}
	}
	if len(acked) == 0 {
		t.Fatalf("no lease was ACKed in 10 runs:\n%s", logs.String())
	}
	srv := start() // the last restart reads what the cuts left
	defer func() { srv.Process.Kill(); srv.Wait() }()
	for i := 0; i < 100 && !strings.Contains(logs.String(), "dhcp server listening"); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	onDiskLeases, err := dhcp.ReadLeaseFile(leases)
	if err != nil {
		t.Fatalf("lease journal does not read after 10 power cuts: %v", err)
	}
	onDisk := map[string]netip.Addr{}
	for _, r := range onDiskLeases {
		onDisk[r.MAC.String()] = r.IP
	}
	lost := 0
	for mac, ip := range acked {
		if onDisk[mac] != ip {
			lost++
			t.Errorf("ACKed lease %s → %v is %v on disk", mac, ip, onDisk[mac])
		}
	}
	if strings.Contains(logs.String(), "corrupt") {
		t.Errorf("lease file reported corrupt:\n%s", logs.String())
	}
	t.Logf("10 kills: %d leases ACKed to the test's client, %d lost; %d leases on disk in all (storm included); %d starts dropped a torn last append",
		len(acked), lost, len(onDiskLeases), strings.Count(logs.String(), "torn write"))
}
