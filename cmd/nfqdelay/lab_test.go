//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// listenIn opens a UDP socket inside network namespace ns (a full name,
// /run/netns/ns); it stays in that namespace for its life.
func listenIn(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	err = netlab.Enter(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp4", a)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	// As root: room for a whole burst, so only the impairment could lose.
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 4<<20)
		})
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends seq to the echo server and waits for it to come back.
func roundTrip(c *net.UDPConn, to *net.UDPAddr, seq uint32) (time.Duration, error) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], seq)
	start := time.Now()
	if _, err := c.WriteToUDP(b[:], to); err != nil {
		return 0, err
	}
	c.SetReadDeadline(start.Add(3 * time.Second))
	buf := make([]byte, 64)
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return 0, err
		}
		if n == 4 && binary.BigEndian.Uint32(buf) == seq {
			return time.Since(start), nil
		}
	}
}

// TestLabDelay runs scripts/netlab.sh impair c1 delay in a one-client lab.
func TestLabDelay(t *testing.T) {
	testutil.Tool(t, "iptables")
	l := netlab.New(t, netlab.Options{Clients: 1}) // skips unless root
	c1 := netlab.ClientAddr(1)

	echo := listenIn(t, l.NS("c1"), c1+":9400")
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return // closed by cleanup
			}
			echo.WriteToUDP(buf[:n], from)
		}
	}()
	cli := listenIn(t, l.NS("srv"), netlab.ServerAddr+":0")
	echoAddr := echo.LocalAddr().(*net.UDPAddr)
	if _, err := roundTrip(cli, echoAddr, 0); err != nil { // ARP, before any impairment
		t.Fatal(err)
	}

	t.Run("rtt", func(t *testing.T) {
		if err := l.Impair("c1", "delay", "50"); err != nil {
			t.Fatal(err)
		}
		var rtts []time.Duration
		for i := range uint32(20) {
			d, err := roundTrip(cli, echoAddr, 1+i)
			if err != nil {
				t.Fatalf("ping %d: %v", i, err)
			}
			rtts = append(rtts, d)
		}
		slices.Sort(rtts)
		median := rtts[len(rtts)/2]
		t.Logf("delay 50 ms each way: RTT min %v median %v max %v", rtts[0], median, rtts[len(rtts)-1])
		// Both directions through c1 are held 50 ms and a timer never
		// fires early: a lower bound, not a timing guess.
		if median < 90*time.Millisecond {
			t.Errorf("median RTT %v, want >= 90 ms (2 x 50 ms delay)", median)
		}
	})

	t.Run("reorder", func(t *testing.T) {
		if err := l.Impair("c1", "delay", "1", "20"); err != nil {
			t.Fatal(err)
		}
		const n = 200
		rx := listenIn(t, l.NS("c1"), c1+":9401")
		to := rx.LocalAddr().(*net.UDPAddr)
		for i := range uint32(n) {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], i)
			if _, err := cli.WriteToUDP(b[:], to); err != nil {
				t.Fatal(err)
			}
		}
		got := receive(t, rx, n, 5*time.Second)
		seen := map[uint32]bool{}
		inversions := 0
		for i, v := range got {
			if seen[v] {
				t.Errorf("datagram %d arrived twice", v)
			}
			seen[v] = true
			if i > 0 && v < got[i-1] {
				inversions++
			}
		}
		t.Logf("delay 1 ms + jitter 20 ms: %d of %d datagrams, %d inversions", len(seen), n, inversions)
		if len(seen) != n {
			t.Errorf("%d of %d datagrams arrived, want all", len(seen), n)
		}
		if inversions == 0 {
			t.Errorf("%d datagrams arrived in order, want reordering with 20 ms jitter", len(got))
		}
	})

	t.Run("clear", func(t *testing.T) {
		// Held datagrams go out at once when the delay is cleared.
		if err := l.Impair("c1", "delay", "20000"); err != nil {
			t.Fatal(err)
		}
		rx := listenIn(t, l.NS("c1"), c1+":9402")
		to := rx.LocalAddr().(*net.UDPAddr)
		for i := range uint32(5) {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], i)
			if _, err := cli.WriteToUDP(b[:], to); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond) // queued in c1 by now
		if err := l.Impair("c1", "clear"); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, rx, 5, 10*time.Second); len(got) != 5 {
			t.Errorf("after clear: %d of 5 held datagrams arrived (delay was 20 s)", len(got))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := l.Run(ctx, "c1", "iptables", "-S")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "NFQUEUE") {
			t.Errorf("after clear, c1 still has NFQUEUE rules:\n%s", out)
		}
		if pids := nfqdelayPids(t, l.NS("c1")); len(pids) > 0 {
			t.Errorf("after clear, nfqdelay still runs in c1: %v", pids)
		}
		if _, err := roundTrip(cli, echoAddr, 1000); err != nil {
			t.Errorf("after clear: %v", err)
		}
	})
}

// receive reads 4-byte sequence numbers until it has n or timeout passes.
func receive(t *testing.T, c *net.UDPConn, n int, timeout time.Duration) []uint32 {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	var got []uint32
	buf := make([]byte, 64)
	for len(got) < n {
		m, _, err := c.ReadFromUDP(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m == 4 {
			got = append(got, binary.BigEndian.Uint32(buf))
		}
	}
	return got
}

// nfqdelayPids lists live nfqdelay processes in namespace ns.
func nfqdelayPids(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, pid := range strings.Fields(string(out)) {
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		if strings.TrimSpace(string(comm)) == "nfqdelay" {
			pids = append(pids, pid)
		}
	}
	return pids
}
