//go:build linux

package netlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the traffic helper that runs inside the lab's
// namespaces: ip netns exec PREFIX-NS <test binary> MODE ARGS... with
// NETLAB_HELPER=1 in the environment.
const helperEnv = "NETLAB_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// Helper bounds: every helper exits on its own within helperLife.
const (
	helperLife = 15 * time.Second
	group      = "239.255.0.1"
	endMarker  = "END"
	endCopies  = 50 // at 20 % loss all 50 are lost with p = 0.2^50
)

func helperMain(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "helper: want MODE ADDR ...")
		return 2
	}
	var err error
	switch args[0] {
	case "echo": // echo ADDR: UDP echo server
		err = helperEcho(args[1])
	case "ping": // ping ADDR: one UDP round trip, retried
		err = helperPing(args[1])
	case "recv": // recv ADDR [GROUP]: count datagrams until END
		g := ""
		if len(args) > 2 {
			g = args[2]
		}
		err = helperRecv(args[1], g)
	case "send": // send ADDR N: N datagrams, then END markers
		var n int
		if len(args) < 3 {
			err = errors.New("send ADDR N")
		} else if n, err = strconv.Atoi(args[2]); err == nil {
			err = helperSend(args[1], n)
		}
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

func helperEcho(addr string) error {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("ready")
	buf := make([]byte, 2048)
	deadline := time.Now().Add(helperLife)
	for {
		c.SetReadDeadline(deadline)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		if _, err := c.WriteTo(buf[:n], from); err != nil {
			return err
		}
	}
}

func helperPing(addr string) error {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for try := range 10 { // bounded: 10 x 300 ms
		msg := fmt.Sprintf("ping %d", try)
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == msg {
			fmt.Println("pong", c.LocalAddr())
			return nil
		}
	}
	return fmt.Errorf("no echo from %s after 10 tries", addr)
}

func helperRecv(addr, grp string) error {
	var c *net.UDPConn
	var err error
	if grp != "" {
		ifi, ierr := net.InterfaceByName("eth0")
		if ierr != nil {
			return ierr
		}
		a, rerr := net.ResolveUDPAddr("udp4", net.JoinHostPort(grp, addr))
		if rerr != nil {
			return rerr
		}
		c, err = net.ListenMulticastUDP("udp4", ifi, a)
	} else {
		a, rerr := net.ResolveUDPAddr("udp4", addr)
		if rerr != nil {
			return rerr
		}
		c, err = net.ListenUDP("udp4", a)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	// Bursts overflow the default rmem (docs/lab-notes.md, "UDP receive
	// buffers"); as root, force 4 MiB so
	// only the impairment under test loses datagrams.
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 4<<20)
		})
	}
	fmt.Println("ready")
	buf := make([]byte, 2048)
	deadline := time.Now().Add(helperLife)
	count := 0
	for {
		c.SetReadDeadline(deadline)
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				fmt.Println("count", count, "timeout")
				return nil
			}
			return err
		}
		if string(buf[:n]) == endMarker {
			fmt.Println("count", count)
			return nil
		}
		count++
		if count == 1 {
			// Once data flows, END follows within a second.
			deadline = time.Now().Add(3 * time.Second)
		}
	}
}

func helperSend(addr string, n int) error {
	to, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return err
	}
	// Unconnected: the ICMP port unreachables that answer the END markers
	// after the receiver has gone must not fail the sender.
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	payload := bytes.Repeat([]byte{'x'}, 100)
	for i := range n {
		if _, err := c.WriteToUDP(payload, to); err != nil {
			return err
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // keep bursts far below any queue limit
		}
	}
	for range endCopies {
		if _, err := c.WriteToUDP([]byte(endMarker), to); err != nil {
			return err
		}
		time.Sleep(200 * time.Microsecond)
	}
	fmt.Println("sent", n)
	return nil
}

// helperEnviron is the environment of a helper process. Under -race a Go
// binary sleeps atexit_sleep_ms (1 s by default) before exiting; helpers
// exit often, so that sleep is turned off.
func helperEnviron() []string {
	return append(os.Environ(), helperEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// helper is one helper process running in a lab namespace.
type helper struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	err   error
	last  string
}

// startHelper starts the test binary as a helper in namespace ns and, for
// modes that announce it, waits until it prints "ready".
func startHelper(t *testing.T, ctx context.Context, l *Lab, ns string, args ...string) *helper {
	t.Helper()
	cmd := l.Command(ctx, ns, os.Args[0], args...)
	cmd.Env = helperEnviron()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %v in %s: %v", args, ns, err)
	}
	h := &helper{cmd: cmd, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		h.err = cmd.Wait()
		if h.err != nil {
			h.err = fmt.Errorf("helper %v in %s: %w: %s", args, ns, h.err, strings.TrimSpace(stderr.String()))
		}
		close(h.lines)
		close(h.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-h.done
	})
	select {
	case line, ok := <-h.lines:
		if !ok {
			<-h.done
			t.Fatalf("helper %v in %s exited before ready: %v", args, ns, h.err)
		}
		if line != "ready" {
			t.Fatalf("helper %v in %s: got %q, want ready", args, ns, line)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("helper %v in %s: not ready after 10 s", args, ns)
	}
	return h
}

// wait waits for the helper to exit and returns its last output line.
func (h *helper) wait(t *testing.T) string {
	t.Helper()
	timeout := time.After(helperLife + 5*time.Second)
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				<-h.done
				if h.err != nil {
					t.Fatal(h.err)
				}
				return h.last
			}
			h.last = line
		case <-timeout:
			t.Fatalf("helper %v did not exit", h.cmd.Args)
		}
	}
}

// count parses "count N" from a recv helper.
func (h *helper) count(t *testing.T) int {
	t.Helper()
	line := h.wait(t)
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "count" {
		t.Fatalf("recv helper printed %q, want count N", line)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runHelper runs a helper to completion in namespace ns.
func runHelper(t *testing.T, ctx context.Context, l *Lab, ns string, args ...string) string {
	t.Helper()
	cmd := l.Command(ctx, ns, os.Args[0], args...)
	cmd.Env = helperEnviron()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %v in %s: %v: %s", args, ns, err, out)
	}
	return strings.TrimSpace(string(out))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// labNamespaces lists the namespaces of prefix.
func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct {
		i    int
		want string
	}{{1, "192.0.2.101"}, {154, "192.0.2.254"}, {155, "198.51.100.101"}, {200, "198.51.100.146"}} {
		if got := ClientAddr(tc.i); got != tc.want {
			t.Errorf("ClientAddr(%d) = %s, want %s", tc.i, got, tc.want)
		}
	}
}

func TestScriptPath(t *testing.T) {
	p := ScriptPath()
	if p == "" || !fileExists(p) {
		t.Fatalf("ScriptPath() = %q, want an existing scripts/netlab.sh", p)
	}
}

func TestUnicast(t *testing.T) {
	l := New(t, Options{Clients: 3})
	ctx := testContext(t)
	if got := len(labNamespaces(t, l.Prefix)); got != 5 {
		t.Errorf("%d namespaces, want 5 (sw, srv, c1..c3)", got)
	}
	startHelper(t, ctx, l, "srv", "echo", ServerAddr+":9001")
	startHelper(t, ctx, l, "c2", "echo", ClientAddr(2)+":9001")
	for _, c := range []string{"c1", "c3"} {
		out := runHelper(t, ctx, l, c, "ping", ServerAddr+":9001")
		if !strings.HasPrefix(out, "pong") {
			t.Errorf("%s -> srv: %q", c, out)
		}
	}
	runHelper(t, ctx, l, "c1", "ping", ClientAddr(2)+":9001")
	// Wire counters moved and the quiet wire (no IPv6 autoconf) is quiet:
	// the ping exchanges above plus ARP are a handful of packets.
	rxB, txB, rxP, txP, err := l.Counters("c3")
	if err != nil {
		t.Fatal(err)
	}
	if rxP == 0 || txP == 0 || rxB == 0 || txB == 0 || txP > 20 {
		t.Errorf("c3 counters rx %d B %d pkts, tx %d B %d pkts: want a few packets each way", rxB, rxP, txB, txP)
	}
}

func TestTaps(t *testing.T) {
	l := New(t, Options{Taps: 2})
	ctx := testContext(t)
	out, err := l.Run(ctx, "sw", "ip", "-o", "link", "show", "master", "br0")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p-srv", "tap1", "tap2"} {
		if !strings.Contains(out, " "+want) {
			t.Errorf("br0 ports %q lack %s", out, want)
		}
	}
}

// multicastTo starts receivers (joined to group) in joined, sends n
// datagrams from srv and returns what each receiver counted.
func multicastTo(t *testing.T, ctx context.Context, l *Lab, n int, joined ...string) map[string]int {
	t.Helper()
	const port = "9100"
	hs := map[string]*helper{}
	for _, c := range joined {
		hs[c] = startHelper(t, ctx, l, c, "recv", port, group)
	}
	if l.Opts.Snooping {
		waitMDB(t, ctx, l, joined)
	}
	runHelper(t, ctx, l, "srv", "send", net.JoinHostPort(group, port), strconv.Itoa(n))
	got := map[string]int{}
	for c, h := range hs {
		got[c] = h.count(t)
	}
	return got
}

// waitMDB waits (bounded) until the snooping bridge has learnt that the
// ports of clients have joined group from their IGMP reports.
func waitMDB(t *testing.T, ctx context.Context, l *Lab, clients []string) {
	t.Helper()
	var out string
	for range 50 { // 50 x 100 ms
		var err error
		out, err = l.Run(ctx, "sw", "bridge", "mdb", "show", "dev", "br0")
		if err != nil {
			t.Fatal(err)
		}
		all := true
		for _, c := range clients {
			all = all && strings.Contains(out, "port p-"+c+" grp "+group)
		}
		if all {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("bridge mdb after 5 s lacks %v in %s:\n%s", clients, group, out)
}

func TestMulticastFlood(t *testing.T) {
	l := New(t, Options{Clients: 3})
	ctx := testContext(t)
	const n = 300
	_, _, rx0, _, err := l.Counters("c3")
	if err != nil {
		t.Fatal(err)
	}
	got := multicastTo(t, ctx, l, n, "c1", "c2")
	for c, k := range got {
		if k != n {
			t.Errorf("%s received %d of %d multicast datagrams", c, k, n)
		}
	}
	// c3 never joined but a flooding bridge delivers the group to its wire.
	_, _, rx1, _, err := l.Counters("c3")
	if err != nil {
		t.Fatal(err)
	}
	if rx1-rx0 < n {
		t.Errorf("c3 (not joined) saw %d packets on the wire, want >= %d (flooding)", rx1-rx0, n)
	}
}

func TestMulticastSnooping(t *testing.T) {
	l := New(t, Options{Clients: 3, Snooping: true})
	ctx := testContext(t)
	const n = 300
	_, _, rx0, _, err := l.Counters("c3")
	if err != nil {
		t.Fatal(err)
	}
	got := multicastTo(t, ctx, l, n, "c1", "c2")
	for c, k := range got {
		if k != n {
			t.Errorf("%s received %d of %d multicast datagrams", c, k, n)
		}
	}
	_, _, rx1, _, err := l.Counters("c3")
	if err != nil {
		t.Fatal(err)
	}
	// IGMP queries and other clients' reports may reach c3; the group may not.
	if rx1-rx0 > n/10 {
		t.Errorf("c3 (not joined) saw %d packets on the wire, want almost none with snooping", rx1-rx0)
	}
}

func TestLoss(t *testing.T) {
	l := New(t, Options{Clients: 1})
	ctx := testContext(t)
	// Resolve ARP both ways before impairing, so that a lost ARP request
	// cannot stall the burst and count as impairment loss.
	startHelper(t, ctx, l, "srv", "echo", ServerAddr+":9001")
	runHelper(t, ctx, l, "c1", "ping", ServerAddr+":9001")
	if err := l.Impair("c1", "loss", "20"); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	_, _, _, tx0, err := l.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	_, _, rx0, _, err := l.Counters("c1")
	if err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, ctx, l, "c1", "recv", ClientAddr(1)+":9200")
	runHelper(t, ctx, l, "srv", "send", ClientAddr(1)+":9200", strconv.Itoa(n))
	got := h.count(t)
	loss := 100 * float64(n-got) / n
	t.Logf("20 %% impairment: %d of %d datagrams arrived, %.1f %% lost", got, n, loss)
	if loss < 8 || loss > 35 {
		t.Errorf("measured loss %.1f %% (%d of %d arrived), want 8..35 %%", loss, got, n)
	}
	_, _, _, tx1, err := l.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	_, _, rx1, _, err := l.Counters("c1")
	if err != nil {
		t.Fatal(err)
	}
	if sent := tx1 - tx0; sent < n {
		t.Errorf("srv eth0 sent %d packets, want >= %d", sent, n)
	}
	if wire := rx1 - rx0; wire < uint64(got) || wire > uint64(got)+endCopies+20 {
		t.Errorf("c1 eth0 received %d packets, want about %d (datagrams + END markers)", wire, got)
	}
	if err := l.Impair("c1", "clear"); err != nil {
		t.Fatal(err)
	}
	h = startHelper(t, ctx, l, "c1", "recv", ClientAddr(1)+":9201")
	runHelper(t, ctx, l, "srv", "send", ClientAddr(1)+":9201", "500")
	if got := h.count(t); got != 500 {
		t.Errorf("after clear: %d of 500 datagrams arrived", got)
	}
}

func TestRate(t *testing.T) {
	l := New(t, Options{Clients: 1})
	ctx := testContext(t)
	if err := l.Impair("c1", "rate", "50"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []struct{ ns, dev string }{{"sw", "p-c1"}, {"c1", "eth0"}} {
		out, err := l.Run(ctx, ns.ns, "tc", "qdisc", "show", "dev", ns.dev, "root")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "tbf") || !strings.Contains(out, "50Mbit") {
			t.Errorf("%s %s: %q, want tbf 50Mbit", ns.ns, ns.dev, out)
		}
	}
	if err := l.Impair("c1", "clear"); err != nil {
		t.Fatal(err)
	}
	out, err := l.Run(ctx, "sw", "tc", "qdisc", "show", "dev", "p-c1", "root")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "tbf") {
		t.Errorf("after clear: %q", out)
	}
}

func TestDown(t *testing.T) {
	l := New(t, Options{Clients: 2})
	if got := labNamespaces(t, l.Prefix); len(got) != 4 {
		t.Fatalf("namespaces %v, want 4", got)
	}
	// A process left in the lab must not keep it alive.
	ctx := testContext(t)
	startHelper(t, ctx, l, "srv", "echo", ServerAddr+":9001")
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if got := labNamespaces(t, l.Prefix); len(got) != 0 {
		t.Errorf("after Down: namespaces %v remain", got)
	}
	if err := l.Down(); err != nil {
		t.Errorf("second Down: %v", err)
	}
}

func TestTwoLabs(t *testing.T) {
	a := New(t, Options{Clients: 1})
	b := New(t, Options{Clients: 1})
	if a.Prefix == b.Prefix {
		t.Fatalf("both labs have prefix %s", a.Prefix)
	}
	ctx := testContext(t)
	// Same addresses in both; each lab is its own world.
	for _, l := range []*Lab{a, b} {
		startHelper(t, ctx, l, "srv", "echo", ServerAddr+":9001")
		runHelper(t, ctx, l, "c1", "ping", ServerAddr+":9001")
	}
	if err := a.Down(); err != nil {
		t.Fatal(err)
	}
	if got := labNamespaces(t, b.Prefix); len(got) != 3 {
		t.Errorf("after a.Down: lab b has namespaces %v, want 3", got)
	}
	runHelper(t, ctx, b, "c1", "ping", ServerAddr+":9001")
}

func TestSecondSubnet(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up 156 clients")
	}
	const n = MaxClientsNet1 + 2
	l := New(t, Options{Clients: n})
	ctx := testContext(t)
	startHelper(t, ctx, l, "srv", "echo", ServerAddr+":9001")
	// Past the first /24: on-link route to the server's primary address.
	runHelper(t, ctx, l, Client(n), "ping", ServerAddr+":9001")
	runHelper(t, ctx, l, Client(1), "ping", ServerAddr+":9001")
	got := multicastTo(t, ctx, l, 50, Client(1), Client(n))
	for c, k := range got {
		if k != 50 {
			t.Errorf("%s received %d of 50 multicast datagrams", c, k)
		}
	}
}

// TestReapOrphans: a lab whose owning test process died (go test -timeout
// kills without running t.Cleanup) is removed by the next New.
func TestReapOrphans(t *testing.T) {
	if reason := unavailable(Options{}); reason != "" {
		t.Skip("netlab: " + reason)
	}
	script := ScriptPath()
	prefix, err := freePrefix()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "bash", script, "-p", prefix, "up", "1").CombinedOutput(); err != nil {
		t.Fatalf("up: %v %s", err, out)
	}
	defer exec.Command("bash", script, "-p", prefix, "down").Run()
	dead := exec.Command("true")
	dead.Run()
	os.MkdirAll(ownerDir, 0o755)
	os.WriteFile(filepath.Join(ownerDir, prefix+".owner"), []byte(strconv.Itoa(dead.Process.Pid)), 0o644)
	New(t, Options{Clients: 0})
	if m, _ := filepath.Glob("/run/netns/" + prefix + "-*"); len(m) != 0 {
		t.Fatalf("orphaned lab %s still there: %v", prefix, m)
	}
}
