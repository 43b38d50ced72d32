//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// TestLabIPv6 serves tftp.listen and http.listen [::] in the lab's server
// namespace, in both TFTP modes, to a client on a real link (MTU 1500):
// over a global address (blksize 1468 asked, 1448 granted: MTU - 52,
// docs/protocols.md §3.2), over a link-local one (the transfer socket
// binds the request's address with its zone, the single-port loop sends
// by IPV6_PKTINFO's interface index), over IPv4 on the same socket
// (1468 granted), and HTTP over IPv6.
func TestLabIPv6(t *testing.T) {
	l := netlab.New(t, netlab.Options{Clients: 1, IPv6: true}) // skips unless root
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The server has a second link (a veth pair of its own) whose
	// fe80::/64 route comes first: a reply to a link-local client that
	// lost its interface would leave by it.
	for _, c := range []struct{ ns, cmd string }{
		{"srv", "-6 addr add 2001:db8::1/64 dev eth0 nodad"}, {"srv", "-6 addr add fe80::1/64 dev eth0 nodad"},
		{"c1", "-6 addr add 2001:db8::100/64 dev eth0 nodad"}, {"c1", "-6 addr add fe80::100/64 dev eth0 nodad"},
		{"srv", "link add va type veth peer name vb"}, {"srv", "link set va up"}, {"srv", "link set vb up"},
		{"srv", "-6 addr add fe80::2/64 dev va nodad"}, {"srv", "-6 addr add fe80::3/64 dev vb nodad"},
		{"srv", "-6 route del fe80::/64 dev eth0"}, {"srv", "-6 route add fe80::/64 dev eth0 metric 1024"},
	} {
		if out, err := l.Run(ctx, c.ns, "ip", strings.Fields(c.cmd)...); err != nil {
			t.Fatalf("%s: ip %s: %v %s", c.ns, c.cmd, err, out)
		}
	}
	if out, _ := l.Run(ctx, "srv", "ip", "-6", "route", "get", "fe80::100"); strings.Contains(out, "dev eth0") {
		t.Fatalf("the unscoped route to fe80::100 is eth0's, the test would prove nothing: %s", out)
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	data := make([]byte, 300_001)
	rand.NewChaCha8([32]byte{'v', '6'}).Read(data)
	if err := os.WriteFile(filepath.Join(root, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, single := range []string{"false", "true"} {
		t.Run("single_port="+single, func(t *testing.T) {
			var logs syncBuffer
			srv := l.Command(ctx, "srv", bin, "serve", "--tftp.listen", "[::]:69", "--tftp.root", root,
				"--tftp.single_port="+single, "--http.listen", "[::]:80", "--mtftp.enabled=false",
				"--dhcp.mode", "off", "--log.format", "json")
			srv.Stderr = &logs
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { srv.Process.Kill(); srv.Wait() }()
			dir := t.TempDir()
			get := func(server string, extra ...string) {
				t.Helper()
				out := filepath.Join(dir, "out")
				os.Remove(out)
				var o string
				var err error
				for i := 0; i < 50; i++ {
					args := append([]string{"get", "--retries", "2", "--timeout", "300ms", "-o", out}, extra...)
					if o, err = l.Run(ctx, netlab.Client(1), bin, append(args, server, "f")...); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if got, _ := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("get from %s %v: %v %s\nserver log:\n%s", server, extra, err, o, logs.String())
				}
			}
			get("[2001:db8::1]:69")
			get("[fe80::1%eth0]:69", "--blksize", "1468", "--windowsize", "8")
			for _, url := range []string{"tftp://[2001:db8::1]/f", "tftp://192.0.2.1/f"} {
				out := filepath.Join(dir, "curl")
				if o, err := l.Run(ctx, netlab.Client(1), "curl", "-sS", "--tftp-blksize", "1468", "-o", out, url); err != nil {
					t.Fatalf("curl %s: %v %s", url, err, o)
				}
				if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
					t.Fatalf("curl %s: %d bytes", url, len(got))
				}
			}
			if body, err := l.Run(ctx, netlab.Client(1), "curl", "-sS", "--fail", "http://[2001:db8::1]/f"); err != nil || body != string(data) {
				t.Fatalf("HTTP over IPv6: %v, %d bytes", err, len(body))
			}
			// The blksize each client was granted, from the transfer lines.
			granted := map[string]int{}
			for deadline := time.Now().Add(10 * time.Second); len(granted) < 3 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				for _, line := range strings.Split(logs.String(), "\n") {
					var e struct {
						Message, Client, Outcome string
						Blksize                  int
					}
					if json.Unmarshal([]byte(line), &e) != nil || e.Message != "transfer" || e.Outcome != "ok" {
						continue
					}
					host := e.Client[:strings.LastIndex(e.Client, ":")]
					if e.Blksize > 512 {
						granted[strings.Trim(host, "[]")] = e.Blksize
					}
				}
			}
			for client, want := range map[string]int{"2001:db8::100": 1448, "192.0.2.101": 1468} {
				if granted[client] != want {
					t.Errorf("blksize granted to %s: %d, want %d (all: %v)", client, granted[client], want, granted)
				}
			}
			ll := 0
			for c, bs := range granted {
				if strings.HasPrefix(c, "fe80::") && bs == 1448 {
					ll++
				}
			}
			if ll != 1 {
				t.Errorf("no link-local transfer at blksize 1448: %v\n%s", granted, logs.String())
			}
		})
	}
}
