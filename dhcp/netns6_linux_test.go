package dhcp

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestNetnsDHCPv6Dhclient runs ISC dhclient -6 against Server6.Serve
// across a veth pair between two fresh namespaces: the multicast Solicit
// to ff02::1:2 from a link-local source, IPV6_PKTINFO naming the link,
// Advertise/Request/Reply with an address and the boot URL (option 59,
// asked for in the ORO; the architecture from option 61), then the same
// address again after the server restarted from its lease journal.
func TestNetnsDHCPv6Dhclient(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	needRoot(t, "ip")
	dhclient := needRoot(t, "dhclient")
	base := fmt.Sprintf("mt6%d", os.Getpid()%100000)
	nsS, nsC := base+"s", base+"c"
	for _, ns := range []string{nsS, nsC} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		// No duplicate address detection: the link-local addresses are
		// usable at once (nothing else is on this veth).
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	}
	sh(t, "ip", "-n", nsS, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", nsC)
	sh(t, "ip", "-n", nsS, "addr", "add", "2001:db8:1::1/64", "dev", "vs", "nodad")
	sh(t, "ip", "-n", nsS, "link", "set", "vs", "up")
	sh(t, "ip", "-n", nsC, "link", "set", "vc", "up")
	waitLinkLocal(t, nsC, "vc")
	waitLinkLocal(t, nsS, "vs")

	dir := t.TempDir()
	leases := filepath.Join(dir, "leases6")
	serve := func() func() {
		srv := exec.Command("ip", "netns", "exec", nsS, os.Args[0], "-test.run=^TestNetnsServer6Helper$", "-test.v")
		srv.Env = append(os.Environ(), "MTFTPD_DHCP6_HELPER="+leases)
		stdout, _ := srv.StdoutPipe()
		srv.Stderr = srv.Stdout
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		stop := func() {
			srv.Process.Signal(os.Interrupt)
			srv.Wait()
			for l := range lines {
				t.Log("server: ", l)
			}
		}
		t.Cleanup(stop)
		for ready := false; !ready; {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("server helper exited")
				}
				t.Log("server: ", l)
				ready = strings.Contains(l, "dhcp6 server listening")
			case <-time.After(10 * time.Second):
				t.Fatal("server helper did not start")
			}
		}
		return stop
	}

	// dhclient runs its script with a clean environment: it writes what
	// it was given to a file.
	result := filepath.Join(dir, "result")
	script := filepath.Join(dir, "script.sh")
	os.WriteFile(script, []byte("#!/bin/sh\ncase \"$reason\" in BOUND6|REBOOT6|RENEW6|REBIND6) echo \"ip=$new_ip6_address url=$new_dhcp6_bootfile_url\" >> "+result+";; esac\nexit 0\n"), 0o755)
	conf := filepath.Join(dir, "dhclient6.conf")
	os.WriteFile(conf, []byte("send dhcp6.client-arch-type 7;\nrequest dhcp6.bootfile-url, dhcp6.name-servers;\n"), 0o644)
	run := func(lf string) string {
		t.Helper()
		os.Remove(result)
		pid := filepath.Join(dir, "dhclient6.pid")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", nsC, dhclient, "-6", "-1", "-v", "-cf", conf, "-lf", lf,
			"-pf", pid, "-sf", script, "vc").CombinedOutput()
		t.Logf("dhclient:\n%s", out)
		// dhclient went to the background once bound: stop it.
		exec.Command("ip", "netns", "exec", nsC, dhclient, "-6", "-x", "-pf", pid, "-cf", conf, "-lf", lf, "-sf", "/bin/true", "vc").Run()
		if err != nil {
			t.Fatalf("dhclient -6: %v", err)
		}
		got, _ := os.ReadFile(result)
		return strings.TrimSpace(string(got))
	}

	lf := filepath.Join(dir, "dhclient6.leases")
	stop := serve()
	want := "ip=2001:db8:1::100 url=tftp://[2001:db8:1::1]/ipxe.efi"
	if got := run(lf); got != want {
		t.Fatalf("dhclient -6 bound %q, want %q", got, want)
	}
	stop()
	ls, err := ReadLeaseFile(leases)
	if err != nil || len(ls) != 1 || ls[0].IP != netip.MustParseAddr("2001:db8:1::100") || ls[0].Arch != "7" {
		t.Fatalf("lease journal after the first run: %v %+v", err, ls)
	}
	// The restarted server remembers: another client (another DUID) gets
	// the next address, the first one (its DUID kept, its lease
	// forgotten, so it Solicits afresh) its own again.
	serve()
	other := filepath.Join(dir, "other.leases")
	os.WriteFile(other, []byte(`default-duid "\000\003\000\001\002\000\000\000\000\077";`+"\n"), 0o644)
	if got := run(other); !strings.HasPrefix(got, "ip=2001:db8:1::101 ") {
		t.Fatalf("after the restart another client bound %q, want 2001:db8:1::101", got)
	}
	old, _ := os.ReadFile(lf)
	var duid []string
	for _, l := range strings.Split(string(old), "\n") {
		if strings.HasPrefix(l, "default-duid") {
			duid = append(duid, l)
		}
	}
	if len(duid) != 1 {
		t.Fatalf("no default-duid in dhclient's lease file:\n%s", old)
	}
	os.WriteFile(lf, []byte(duid[0]+"\n"), 0o644)
	if got := run(lf); !strings.HasPrefix(got, "ip=2001:db8:1::100 ") {
		t.Fatalf("after the restart the first client bound %q, want 2001:db8:1::100 again", got)
	}
}

// TestNetnsServer6Helper is the server side of TestNetnsDHCPv6Dhclient,
// run by it inside the server namespace.
func TestNetnsServer6Helper(t *testing.T) {
	leases := os.Getenv("MTFTPD_DHCP6_HELPER")
	if leases == "" {
		t.Skip("helper process of TestNetnsDHCPv6Dhclient")
	}
	s := &Server6{
		Interfaces: []string{"vs"}, Prefix: netip.MustParsePrefix("2001:db8:1::/64"),
		RangeStart: netip.MustParseAddr("2001:db8:1::100"), RangeEnd: netip.MustParseAddr("2001:db8:1::1ff"),
		LeaseFile: leases, Log: zerolog.New(os.Stdout).Level(zerolog.DebugLevel),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := s.Serve(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Println("counters:", s.Counters.Snapshot())
}

// waitLinkLocal waits (bounded) until dev in ns has a usable link-local
// address: the kernel adds it once the link has carrier.
func waitLinkLocal(t *testing.T, ns, dev string) {
	t.Helper()
	for range 100 {
		out, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link").CombinedOutput()
		if strings.Contains(string(out), "fe80::") && !strings.Contains(string(out), "tentative") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no link-local address on %s in %s", dev, ns)
}

// needRoot finds a tool a root-only test needs; missing, it fails the
// test (make test installs it: scripts/test-deps.sh).
func needRoot(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s not installed (scripts/test-deps.sh installs it)", bin)
	}
	return p
}
