//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/tftp"
)

// The honest side of TestLabHostileFlood: clients c1..c20 boot-fetch by
// TFTP, c21..c30 join the native multicast stream, c31..c40 take a DHCP
// lease and fetch by HTTP; c41 floods.
const (
	floodTFTPClients  = 20
	floodMcastClients = 10
	floodDHCPClients  = 10
	floodClient       = floodTFTPClients + floodMcastClients + floodDHCPClients + 1
	floodFileSize     = 4 << 20
)

// The flood's shape (issue 13, "Proof"). Each kind is bounded by a count
// and by floodMaxTime.
const (
	// floodAddrs extra addresses of the flooder, .160-.223 of
	// 198.51.100.0/24 (the lab's second subnet, on the same segment), or
	// of the honest clients' own 192.0.2.0/24 with
	// MTFTPD_FLOOD_SAME_PREFIX=1; free either way (clients use .101-.141
	// of 192.0.2.0/24 here, DHCP hands out .10-.99).
	floodAddrs    = 64
	floodFirstIP  = 160
	floodMaxTime  = 60 * time.Second
	floodMinTime  = 20 * time.Second
	joinsPerTick  = 20 // unproven native joins per 10 ms: 2,000/s
	maxJoins      = 100_000
	joinSockets   = 4  // per address
	giantBurst    = 20 // giant RRQs per burst (one address), every 500 ms
	maxGiants     = 2_400
	giantSize     = 65_000
	unconfSockets = 16 // per address: a wave is 1,024 RRQs from 64 addresses
	maxWaves      = 120
	nakAddrs      = 4 // NAK-storm receivers: 4 addresses × 4 ports × 3 blksizes
	nakPorts      = 4
	nakEvery      = 20 * time.Millisecond
	httpConns     = 2_000
)

// nakBlksizes are the native session sizes (docs/native-multicast.md,
// "Joining"); 1468 is the honest receivers' session.
var nakBlksizes = []int{512, 1468, 8972}

// TestLabHostileFlood is the lab proof of issue 13: mtftpd serve in srv
// (TFTP :69, HTTP :80, DHCP server, native multicast) while c41 floods it
// for at least floodMinTime from 64 addresses of the segment's second
// subnet — unproven native joins with varying blksize, 65 KB RRQs of
// thousands of empty options, waves of 1,024 never-ACKed RRQs, 48 proven
// native receivers NAKing every stripe while reporting no loss, and 2,000
// idle HTTP keep-alive connections. Meanwhile 20 clients fetch a 4 MiB
// file by TFTP (mtftpd get and busybox tftp), 10 by native multicast
// (mtftpd get --multicast), and 10 take a DHCP lease (udhcpc, dhclient)
// then fetch the file by HTTP (curl). Every honest client completes and
// its file's SHA-256 is right, the server's peak RSS under the flood
// stays under floodRSSBound. The same honest workload runs first without
// the flood; both times are logged (never asserted: wall-clock on a
// shared machine).
//
// Two switches reproduce attacks that still get through (docs/security.md,
// "Under a flood"): MTFTPD_FLOOD_SAME_PREFIX=1 floods from the honest
// clients' own /24, and TFTP clients fail; MTFTPD_FLOOD_NAK_SPLIT=1 makes
// the NAK-storm receivers share out the stripes, and the log shows the
// repairs they get.
func TestLabHostileFlood(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	if os.Geteuid() == 0 {
		for _, tool := range []string{"busybox", "udhcpc", "dhclient", "curl", "timeout"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Fatalf("%s not found (scripts/test-deps.sh installs it): %v", tool, err)
			}
		}
	}
	l := netlab.New(t, netlab.Options{Clients: floodClient, Snooping: true}) // skips unless root
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	rng := rand.New(rand.NewPCG(13, 13))
	boot, image := make([]byte, floodFileSize), make([]byte, floodFileSize)
	for i := range boot {
		boot[i], image[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	os.WriteFile(filepath.Join(root, "boot.img"), boot, 0o644)
	os.WriteFile(filepath.Join(root, "image.bin"), image, 0o644)
	os.WriteFile(filepath.Join(root, "small.txt"), []byte("keep-alive\n"), 0o644)
	cfg := filepath.Join(dir, "mtftpd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[tftp]
listen = "0.0.0.0:69"
root = %q
[http]
listen = "%s:80"
[dhcp]
mode = "server"
interfaces = ["eth0"]
lease_file = %q
[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.10-192.0.2.99"
lease_time = "1h"
[log]
format = "json"
`, root, netlab.ServerAddr, filepath.Join(dir, "leases.json"))), 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var logs syncBuffer
	srv := l.Command(ctx, "srv", bin, "serve", "--config", cfg)
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	pid := srv.Process.Pid // ip netns exec execs mtftpd: same process
	for i := 0; ; i++ {
		s := logs.String()
		if strings.Contains(s, "tftp server listening") && strings.Contains(s, "dhcp server listening") && strings.Contains(s, "http mirror listening") {
			break
		}
		if i == 150 {
			t.Fatalf("mtftpd did not start:\n%s", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "mtftpd" {
		t.Fatalf("pid %d is %q, not mtftpd", pid, comm)
	}
	defer func() {
		if t.Failed() { // the honest clients' lines that did not end well
			honest := regexp.MustCompile(`"client":"192\.0\.2\.1[0-4][0-9]:`)
			for line := range strings.Lines(logs.String()) {
				if honest.MatchString(line) && !strings.Contains(line, `"outcome":"ok"`) {
					t.Logf("%s", strings.TrimSpace(line))
				}
			}
		}
	}()

	want := map[string][32]byte{"boot.img": sha256.Sum256(boot), "image.bin": sha256.Sum256(image)}
	// One fetch of each file first, so that the quiet round does not pay
	// alone for a cold page cache.
	for _, name := range []string{"boot.img", "image.bin"} {
		if b, err := l.Run(ctx, netlab.Client(1), bin, "get", "-q", "--blksize", "1468", "-o", filepath.Join(dir, "warm"), netlab.ServerAddr, name); err != nil {
			t.Fatalf("warm-up fetch of %s: %v %s", name, err, b)
		}
	}
	os.Remove(filepath.Join(dir, "warm"))
	quiet := honestRound(t, ctx, l, dir, "quiet", want)
	quietHWM := procKB(t, pid, "VmHWM")
	// Reset the peak so the flood's is measured on its own (proc(5),
	// clear_refs "5").
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	quietSessions := strings.Count(logs.String(), "mtftp: native session")
	f := startFlood(t, ctx, l)
	loud := honestRound(t, ctx, l, dir, "flood", want)
	// The flood goes on for at least floodMinTime, so that what it costs
	// the server (RSS, the repairs its receivers get) is measured over a
	// known time, not only the honest round's.
	time.Sleep(time.Until(f.start.Add(floodMinTime)))
	rss := fmt.Sprintf("VmRSS %d KiB (anonymous %d, file %d), %d threads", procKB(t, pid, "VmRSS"),
		procKB(t, pid, "RssAnon"), procKB(t, pid, "RssFile"), procKB(t, pid, "Threads"))
	f.stop()
	floodHWM := procKB(t, pid, "VmHWM")
	t.Logf("flood sent: %s", f.summary())
	t.Logf("server at the end of the flood: %s", rss)
	// The flood's native sessions end once its receivers have been silent
	// for 5 s (docs/native-multicast.md, "The carousel"): wait for their
	// lines (bounded) to log what they sent.
	for i := 0; i < 100 && strings.Count(logs.String(), "mtftp: native session") < quietSessions+f.nSessions(); i++ {
		time.Sleep(100 * time.Millisecond)
	}

	for _, k := range []string{"tftp", "mcast", "dhcp+http", "all"} {
		t.Logf("%-9s quiet %6.2fs  flood %6.2fs  ×%.2f", k, quiet[k].Seconds(), loud[k].Seconds(), loud[k].Seconds()/quiet[k].Seconds())
	}
	t.Logf("server peak RSS: quiet run %d KiB, flood run %d KiB (bound %d KiB)", quietHWM, floodHWM, floodRSSBound)
	if floodHWM > floodRSSBound {
		t.Errorf("server peak RSS under the flood %d KiB, over the bound of %d KiB", floodHWM, floodRSSBound)
	}
	logMetrics(t, ctx, l)
	logNativeSessions(t, logs.String())
}

// floodRSSBound is the server's peak RSS allowed under the flood, in KiB:
// about twice the 99-120 MiB it peaked at (26 MiB without the flood;
// docs/security.md, "Under a flood").
const floodRSSBound = 256 << 10

// honestRound runs the honest workload once, all clients at once, checks
// every file and returns the slowest client's time per kind ("tftp",
// "mcast", "dhcp+http") and the whole round's ("all").
func honestRound(t *testing.T, ctx context.Context, l *netlab.Lab, dir, round string, want map[string][32]byte) map[string]time.Duration {
	t.Helper()
	out := filepath.Join(dir, round)
	os.Mkdir(out, 0o755)
	defer os.RemoveAll(out) // 160 MiB of copies
	var mu sync.Mutex
	took := map[string]time.Duration{}
	var wg sync.WaitGroup
	start := time.Now()
	job := func(kind string, c int, f func(ctx context.Context) error) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 150*time.Second)
			defer cancel()
			t0 := time.Now()
			err := f(ctx)
			d := time.Since(t0)
			mu.Lock()
			took[kind] = max(took[kind], d)
			mu.Unlock()
			if err != nil {
				t.Errorf("%s: c%d (%s) failed after %.1fs: %v", round, c, kind, d.Seconds(), err)
			}
		})
	}
	check := func(path, name string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if sha256.Sum256(b) != want[name] {
			return fmt.Errorf("%s: %d bytes, SHA-256 differs from the served file", path, len(b))
		}
		return nil
	}
	for c := 1; c <= floodTFTPClients; c++ {
		job("tftp", c, func(ctx context.Context) error {
			o := filepath.Join(out, fmt.Sprintf("c%d.img", c))
			var args []string
			if c <= floodTFTPClients/2 { // mtftpd get as firmware of each kind asks
				args = append([]string{"120", bin, "get", "-q"}, labProfiles[c%len(labProfiles)].flags...)
				args = append(args, "-o", o, netlab.ServerAddr, "boot.img")
			} else {
				args = []string{"120", "busybox", "tftp", "-g", "-b", "1468", "-l", o, "-r", "boot.img", netlab.ServerAddr}
			}
			if b, err := l.Run(ctx, netlab.Client(c), "timeout", args...); err != nil {
				return fmt.Errorf("%w %s", err, b)
			}
			return check(o, "boot.img")
		})
	}
	for c := floodTFTPClients + 1; c <= floodTFTPClients+floodMcastClients; c++ {
		job("mcast", c, func(ctx context.Context) error {
			o := filepath.Join(out, fmt.Sprintf("c%d.bin", c))
			b, err := l.Run(ctx, netlab.Client(c), "timeout", "120", bin, "get", "--multicast", "--blksize", "1468",
				"-o", o, netlab.ServerAddr, "image.bin")
			if err != nil {
				return fmt.Errorf("%w %s", err, b)
			}
			if !strings.Contains(b, "by multicast") {
				return fmt.Errorf("not by multicast: %s", b)
			}
			return check(o, "image.bin")
		})
	}
	for c := floodTFTPClients + floodMcastClients + 1; c <= floodClient-1; c++ {
		job("dhcp+http", c, func(ctx context.Context) error {
			kind := "udhcpc"
			if c%2 == 0 {
				kind = "dhclient"
			}
			ip, err := labLease(ctx, l, netlab.Client(c), kind, filepath.Join(out, fmt.Sprintf("c%d-dhcp", c)))
			if err != nil {
				return err
			}
			if a, err := netip.ParseAddr(ip); err != nil || !netip.MustParsePrefix("192.0.2.0/24").Contains(a) || a.As4()[3] < 10 || a.As4()[3] > 99 {
				return fmt.Errorf("%s leased %q, outside the pool", kind, ip)
			}
			o := filepath.Join(out, fmt.Sprintf("c%d.http", c))
			if b, err := l.Run(ctx, netlab.Client(c), "curl", "-sS", "--fail", "--max-time", "60", "-o", o,
				"http://"+netlab.ServerAddr+"/boot.img"); err != nil {
				return fmt.Errorf("%w %s", err, b)
			}
			return check(o, "boot.img")
		})
	}
	wg.Wait()
	took["all"] = time.Since(start)
	return took
}

// labLease runs one DHCP client in namespace ns and returns the address
// it was offered and acknowledged; its script configures nothing.
func labLease(ctx context.Context, l *netlab.Lab, ns, kind, dir string) (string, error) {
	os.Mkdir(dir, 0o755)
	script, leaseOut := filepath.Join(dir, "script.sh"), filepath.Join(dir, "lease.out")
	// udhcpc passes $ip and prints the script's stdout; dhclient runs the
	// script with a clean environment and passes $new_ip_address.
	os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in bound|renew) echo "LEASE $ip" ;; esac
[ -n "$new_ip_address" ] && echo "LEASE $new_ip_address" >> "`+leaseOut+`"
exit 0
`), 0o755)
	var b string
	var err error
	switch kind {
	case "udhcpc":
		b, err = l.Run(ctx, ns, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "2", "-s", script)
	case "dhclient":
		pidf := filepath.Join(dir, "dhclient.pid")
		b, err = l.Run(ctx, ns, "dhclient", "-4", "-1", "-v", "-sf", script, "-lf", filepath.Join(dir, "leases"), "-pf", pidf, "eth0")
		// -1 leaves dhclient running after the lease: stop it.
		l.Run(context.Background(), ns, "dhclient", "-x", "-pf", pidf)
		o, _ := os.ReadFile(leaseOut)
		b += string(o)
	}
	for line := range strings.Lines(b) {
		if ip, ok := strings.CutPrefix(strings.TrimSpace(line), "LEASE "); ok {
			return ip, nil
		}
	}
	return "", fmt.Errorf("%s got no lease (%v): %s", kind, err, b)
}

// flood is the hostile namespace's traffic, sent by this process from
// sockets made inside it.
type flood struct {
	t      *testing.T
	start  time.Time
	cancel context.CancelFunc
	mu     sync.Mutex
	wg     sync.WaitGroup
	closer []func()

	joins, giants, unconf, statuses, nakJoined atomic.Int64
	httpOpen, httpAnswered                     atomic.Int64
	nakSessions                                sync.Map // session id → blksizes asked ("1468+8972")
}

// floodSockets are made inside the flooder's namespace.
type floodSockets struct {
	join   []*net.UDPConn // unproven native joins
	giant  []*net.UDPConn // one per address
	unconf []*net.UDPConn // never-ACKed RRQs
	nak    []*net.UDPConn // proven receivers that NAK everything
	nakBlk []int
	http   []net.Conn
}

// startFlood adds the flooder's addresses, opens its sockets inside its
// namespace and starts every kind of flood; it returns once the proven
// NAK receivers have joined and the HTTP connections are open and idle.
func startFlood(t *testing.T, ctx context.Context, l *netlab.Lab) *flood {
	t.Helper()
	ns := netlab.Client(floodClient)
	var batch strings.Builder
	for i := range floodAddrs {
		fmt.Fprintf(&batch, "addr add %s/24 dev eth0\n", floodAddr(i))
	}
	cmd := l.Command(ctx, ns, "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flooder addresses: %v %s", err, b)
	}
	fctx, cancel := context.WithTimeout(ctx, floodMaxTime)
	f := &flood{t: t, cancel: cancel, start: time.Now()}
	var s floodSockets
	err := netlab.Enter(l.NS(ns), func() error {
		udp := func(a netip.Addr) (*net.UDPConn, error) {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
			if err != nil {
				return nil, err
			}
			// What it is sent (challenges, DATA, ERRORs) is never read:
			// a small buffer keeps the kernel's memory small.
			c.SetReadBuffer(4096)
			f.closer = append(f.closer, func() { c.Close() })
			return c, nil
		}
		for i := range floodAddrs {
			a := floodAddr(i)
			for range joinSockets {
				c, err := udp(a)
				if err != nil {
					return err
				}
				s.join = append(s.join, c)
			}
			c, err := udp(a)
			if err != nil {
				return err
			}
			s.giant = append(s.giant, c)
			for range unconfSockets {
				c, err := udp(a)
				if err != nil {
					return err
				}
				s.unconf = append(s.unconf, c)
			}
		}
		for _, blk := range nakBlksizes {
			for i := range nakAddrs {
				for range nakPorts {
					c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(floodAddr(i), 0)))
					if err != nil {
						return err
					}
					f.closer = append(f.closer, func() { c.Close() })
					s.nak = append(s.nak, c)
					s.nakBlk = append(s.nakBlk, blk)
				}
			}
		}
		// TCP sockets are made by Dial on this thread: one after the
		// other, spread over the addresses (under http.max_conns_per_ip).
		srv := net.JoinHostPort(netlab.ServerAddr, "80")
		for i := range httpConns {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: floodAddr(i % floodAddrs).AsSlice()}}
			c, err := d.DialContext(fctx, "tcp4", srv)
			if err != nil {
				return fmt.Errorf("HTTP connection %d: %w", i, err)
			}
			f.closer = append(f.closer, func() { c.Close() })
			s.http = append(s.http, c)
		}
		return nil
	})
	if err != nil {
		f.stop()
		t.Fatalf("flooder sockets: %v", err)
	}
	srvAddr := netip.AddrPortFrom(netip.MustParseAddr(netlab.ServerAddr), 69)

	// Every HTTP connection asks once, reads the answer, then idles
	// (keep-alive).
	var ready sync.WaitGroup
	work := make(chan net.Conn)
	for range 64 {
		ready.Go(func() {
			for c := range work {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "GET /small.txt HTTP/1.1\r\nHost: %s\r\n\r\n", netlab.ServerAddr)
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						f.httpAnswered.Add(1)
					}
				}
				c.SetDeadline(time.Time{})
			}
		})
	}
	for _, c := range s.http {
		work <- c
	}
	close(work)
	f.httpOpen.Store(int64(len(s.http)))

	// Proven receivers: each joins (RRQ, CHALLENGE, RRQ with the cookie,
	// SESSION) and then NAKs every stripe every nakEvery, reporting no
	// loss, until the flood ends.
	for i, c := range s.nak {
		ready.Go(func() {
			j, err := nativeJoinRaw(c, srvAddr, s.nakBlk[i])
			if err != nil {
				t.Errorf("NAK-storm receiver %d (blksize %d) could not join: %v", i, s.nakBlk[i], err)
				return
			}
			f.nakJoined.Add(1)
			f.addSession(j.id, s.nakBlk[i])
			f.wg.Go(func() { f.nakStorm(fctx, c, j, i%(nakAddrs*nakPorts)) })
		})
	}
	ready.Wait()

	f.wg.Go(func() { // unproven native joins, never answering the CHALLENGE
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 0; n < maxJoins; {
			select {
			case <-fctx.Done():
				return
			case <-tick.C:
			}
			for range joinsPerTick {
				c := s.join[rng.IntN(len(s.join))]
				b := rrq("image.bin", "blksize", strconv.Itoa(8+rng.IntN(65464-8)), "multicast", "", "x-mtftpd", "2")
				if _, err := c.WriteToUDPAddrPort(b, srvAddr); err == nil {
					f.joins.Add(1)
				}
				n++
			}
		}
	})
	f.wg.Go(func() { // 65 KB RRQs of thousands of empty options
		g := append([]byte{0, 1}, "boot.img\x00octet\x00"...)
		for i := 0; len(g) < giantSize; i++ {
			g = fmt.Appendf(g, "o%d\x00\x00", i)
		}
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for n := 0; n < maxGiants; {
			c := s.giant[(n/giantBurst)%len(s.giant)]
			for range giantBurst {
				if _, err := c.WriteToUDPAddrPort(g, srvAddr); err == nil {
					f.giants.Add(1)
				}
				n++
			}
			select {
			case <-fctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	f.wg.Go(func() { // waves of plain RRQs that are never ACKed
		b := rrq("boot.img")
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for range maxWaves {
			for _, c := range s.unconf {
				if _, err := c.WriteToUDPAddrPort(b, srvAddr); err == nil {
					f.unconf.Add(1)
				}
			}
			select {
			case <-fctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	// The honest clients start into a flood already running.
	time.Sleep(time.Second)
	t.Logf("flood started: %d HTTP connections open (%d answered), %d of %d NAK receivers joined sessions %v",
		f.httpOpen.Load(), f.httpAnswered.Load(), f.nakJoined.Load(), len(s.nak), f.sessions())
	return f
}

// floodAddr is the flooder's i-th extra address.
func floodAddr(i int) netip.Addr {
	if os.Getenv("MTFTPD_FLOOD_SAME_PREFIX") == "1" {
		return netip.AddrFrom4([4]byte{192, 0, 2, byte(floodFirstIP + i)})
	}
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(floodFirstIP + i)})
}

// stop ends the flood and closes every socket it made.
func (f *flood) stop() {
	f.cancel()
	f.wg.Wait()
	for _, c := range f.closer {
		c()
	}
	f.closer = nil
}

// addSession notes that a receiver asking for blksize blk was put in
// session id (8972 becomes 1468 on a 1500-byte MTU).
func (f *flood) addSession(id uint32, blk int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, _ := f.nakSessions.Load(id)
	old, _ := v.(string)
	if b := strconv.Itoa(blk); !slices.Contains(strings.Split(old, "+"), b) {
		f.nakSessions.Store(id, strings.TrimPrefix(old+"+"+b, "+"))
	}
}

func (f *flood) nSessions() int {
	n := 0
	f.nakSessions.Range(func(_, _ any) bool { n++; return true })
	return n
}

func (f *flood) sessions() string {
	var ss []string
	f.nakSessions.Range(func(k, v any) bool {
		ss = append(ss, fmt.Sprintf("%#x (blksize %s)", k, v))
		return true
	})
	return strings.Join(ss, " ")
}

func (f *flood) summary() string {
	return fmt.Sprintf("%d unproven native joins, %d giant RRQs (%d bytes each), %d never-ACKed RRQs, %d STATUS packets NAKing every stripe from %d proven receivers, %d idle HTTP connections",
		f.joins.Load(), f.giants.Load(), giantSize, f.unconf.Load(), f.statuses.Load(), f.nakJoined.Load(), f.httpOpen.Load())
}

// rrq is a read request for file with options given as name, value pairs.
func rrq(file string, opts ...string) []byte {
	r := tftp.Request{Op: tftp.OpRRQ, Filename: file, Mode: "octet"}
	for i := 0; i+1 < len(opts); i += 2 {
		r.Options = append(r.Options, tftp.Option{Name: opts[i], Value: opts[i+1]})
	}
	return r.Marshal(nil)
}

// nativeJoined is what a proven receiver learned from its SESSION answer.
type nativeJoined struct {
	id      uint32
	token   [16]byte
	ctl     netip.AddrPort // the session socket: STATUS goes there
	stripes int
	k       int
}

// Native packet layouts (mtftp/native_wire.go, docs/native-multicast.md
// "Packets"), built by hand: a hostile receiver uses no library.
const (
	nativeOpSession   = 0x4d53
	nativeOpChallenge = 0x4d43
	nativeOpStatus    = 0x4d4e
	nativeSessionLen  = 79 // fixed part of SESSION, before the name
)

// nativeJoinRaw joins the native session of image.bin with blksize blk
// from c: RRQ, CHALLENGE, RRQ with x-cookie, SESSION.
func nativeJoinRaw(c *net.UDPConn, srv netip.AddrPort, blk int) (nativeJoined, error) {
	var j nativeJoined
	var cookie []byte
	buf := make([]byte, 2048)
	for try := 0; try < 8; try++ {
		opts := []string{"blksize", strconv.Itoa(blk), "multicast", "", "x-mtftpd", "2"}
		if cookie != nil {
			opts = append(opts, "x-cookie", hex.EncodeToString(cookie))
		}
		if _, err := c.WriteToUDPAddrPort(rrq("image.bin", opts...), srv); err != nil {
			return j, err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // timeout: ask again
			}
			b := buf[:n]
			if n < 2 || from.Addr().Unmap() != srv.Addr() {
				continue
			}
			switch op := binary.BigEndian.Uint16(b); {
			case op == nativeOpChallenge && n == 18:
				cookie = append([]byte(nil), b[2:]...)
			case op == nativeOpSession && n >= nativeSessionLen && cookie != nil:
				j.id = binary.BigEndian.Uint32(b[2:])
				size := binary.BigEndian.Uint64(b[13:])
				shard := int(binary.BigEndian.Uint16(b[21:]))
				j.k = int(binary.BigEndian.Uint16(b[23:]))
				j.stripes = int((size + uint64(shard*j.k) - 1) / uint64(shard*j.k))
				copy(j.token[:], cookie)
				j.ctl = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
				c.SetReadDeadline(time.Time{})
				return j, nil
			case op == uint16(tftp.OpERROR):
				_, msg, _ := tftp.ParseError(b)
				return j, fmt.Errorf("ERROR %q", msg)
			default:
				continue
			}
			break // answer the challenge at once
		}
	}
	return j, errors.New("no SESSION after 8 tries")
}

// nakStorm sends j's session a STATUS every nakEvery that reports no loss
// and NAKs every stripe as wholly missing (96 NAKs a packet, the most).
// With MTFTPD_FLOOD_NAK_SPLIT=1 receiver idx of the nakAddrs × nakPorts
// asking for one blksize NAKs only the stripes s with s mod 16 = idx, and
// reports every 200 ms: each repair round is then charged to one
// receiver's credit instead of all of them (see docs/security.md, "Under
// a flood").
func (f *flood) nakStorm(ctx context.Context, c *net.UDPConn, j nativeJoined, idx int) {
	every, mine := nakEvery, []int{}
	split := os.Getenv("MTFTPD_FLOOD_NAK_SPLIT") == "1"
	if split {
		every = 200 * time.Millisecond
	}
	for s := range j.stripes {
		if !split || s%(nakAddrs*nakPorts) == idx {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		b := binary.BigEndian.AppendUint16(nil, nativeOpStatus)
		b = binary.BigEndian.AppendUint32(b, j.id)
		b = append(b, j.token[:]...)
		b = binary.BigEndian.AppendUint32(b, 1000) // seen
		b = binary.BigEndian.AppendUint32(b, 0)    // lost: none
		b = binary.BigEndian.AppendUint32(b, 10_000)
		b = binary.BigEndian.AppendUint32(b, 0) // complete
		b = binary.BigEndian.AppendUint32(b, 0) // first position
		n := min(96, len(mine))
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		for range n {
			b = binary.BigEndian.AppendUint32(b, uint32(mine[next%len(mine)]))
			b = binary.BigEndian.AppendUint16(b, uint16(j.k))
			b = binary.BigEndian.AppendUint64(b, ^uint64(0))
			next++
		}
		if _, err := c.WriteToUDPAddrPort(b, j.ctl); err == nil {
			f.statuses.Add(1)
		}
	}
}

// procKB reads a "Key: N kB" line of /proc/pid/status.
func procKB(t *testing.T, pid int, key string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s: %q", key, line)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// logMetrics logs the server's counters that show the flood's bounds.
func logMetrics(t *testing.T, ctx context.Context, l *netlab.Lab) {
	t.Helper()
	b, err := l.Run(ctx, netlab.Client(1), "curl", "-sS", "--max-time", "10", "http://"+netlab.ServerAddr+"/metrics")
	if err != nil {
		t.Errorf("/metrics after the flood: %v", err)
		return
	}
	re := regexp.MustCompile(`evicted|pending|rate_limited|bad_token|shed|refused|challenge|oversized|busy|native|unknown_peer|bad_packet`)
	var keep []string
	for line := range strings.Lines(b) {
		if !strings.HasPrefix(line, "#") && re.MatchString(line) {
			keep = append(keep, strings.TrimSpace(line))
		}
	}
	t.Logf("server counters:\n%s", strings.Join(keep, "\n"))
}

// logNativeSessions logs what each native session sent and refused.
func logNativeSessions(t *testing.T, log string) {
	t.Helper()
	for line := range strings.Lines(log) {
		var e struct {
			Message                               string
			Group                                 string
			Receivers, Completed, Dropped, Passes int
			DataShards                            int     `json:"data_shards"`
			RepairShards                          int     `json:"repair_shards"`
			Naks                                  int     `json:"naks"`
			NaksOverCredit                        int     `json:"naks_over_credit"`
			WireRatio                             float64 `json:"wire_ratio"`
			Duration                              float64 `json:"duration"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Message != "mtftp: native session" {
			continue
		}
		t.Logf("native session %s: %d receivers (%d completed, %d dropped), %d passes, %d data + %d repair shards (%.2f× the file) in %.1fs; %d NAKs, %d over the receivers' credit",
			e.Group, e.Receivers, e.Completed, e.Dropped, e.Passes, e.DataShards, e.RepairShards, e.WireRatio, e.Duration/1000, e.Naks, e.NaksOverCredit)
	}
}
