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

	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestNetnsUdhcpc boots busybox udhcpc as a BIOS PXE client against Serve
// across a veth pair between two fresh network namespaces: the path
// loopback cannot test — a broadcast DISCOVER, IP_PKTINFO telling the
// interface, SO_BINDTODEVICE, and the OFFER/ACK broadcast out of it.
func TestNetnsUdhcpc(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	need(t, "ip")
	udhcpc := need(t, "udhcpc")
	base := fmt.Sprintf("mtd%d", os.Getpid()%100000)
	nsS, nsC := base+"s", base+"c"
	sh(t, "ip", "netns", "add", nsS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsS).Run() })
	sh(t, "ip", "netns", "add", nsC)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsC).Run() })
	sh(t, "ip", "-n", nsS, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", nsC)
	sh(t, "ip", "-n", nsS, "addr", "add", "192.0.2.1/24", "dev", "vs")
	sh(t, "ip", "-n", nsS, "link", "set", "vs", "up")
	sh(t, "ip", "-n", nsC, "link", "set", "vc", "up")

	dir := t.TempDir()
	leases := filepath.Join(dir, "leases.json")
	srv := exec.Command("ip", "netns", "exec", nsS, os.Args[0], "-test.run=^TestNetnsServerHelper$", "-test.v")
	srv.Env = append(os.Environ(), "MTFTPD_DHCP_HELPER="+leases)
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
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
	})
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("server helper exited")
			}
			t.Log("server: ", l)
			ready = strings.Contains(l, "dhcp server listening")
		case <-time.After(10 * time.Second):
			t.Fatal("server helper did not start")
		}
	}

	script := filepath.Join(dir, "udhcpc.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"RESULT ip=$ip siaddr=$siaddr boot_file=$boot_file serverid=$serverid subnet=$subnet router=$router\"\nexit 0\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", nsC, udhcpc, "-i", "vc", "-f", "-q", "-n", "-t", "5", "-T", "1",
		"-s", script, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000").CombinedOutput()
	t.Logf("udhcpc:\n%s", out)
	if err != nil {
		t.Fatalf("udhcpc: %v", err)
	}
	want := "RESULT ip=192.0.2.100 siaddr=192.0.2.1 boot_file=undionly.kpxe serverid=192.0.2.1 subnet=255.255.255.0 router=192.0.2.254"
	if !strings.Contains(string(out), want) {
		t.Errorf("udhcpc did not bind as expected; want %q", want)
	}
	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	if ls := leasesOnDisk(t, leases); len(ls) != 1 || ls[0].IP.String() != "192.0.2.100" {
		t.Errorf("lease file: %+v", ls)
	}
}

// TestNetnsServerHelper is the server side of TestNetnsUdhcpc, run by it
// inside the server namespace.
func TestNetnsServerHelper(t *testing.T) {
	leases := os.Getenv("MTFTPD_DHCP_HELPER")
	if leases == "" {
		t.Skip("helper process of TestNetnsUdhcpc")
	}
	s := &Server{
		Interfaces: []string{"vs"},
		Subnets: []Subnet{{
			Prefix:     netip.MustParsePrefix("192.0.2.0/24"),
			RangeStart: netip.MustParseAddr("192.0.2.100"), RangeEnd: netip.MustParseAddr("192.0.2.110"),
			Router: netip.MustParseAddr("192.0.2.254"),
		}},
		LeaseFile: leases,
		Log:       zerolog.New(os.Stdout).Level(zerolog.DebugLevel),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := s.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("counters:", s.Counters.Snapshot())
}

func need(t *testing.T, bin string) string {
	t.Helper()
	return testutil.Tool(t, bin)
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
