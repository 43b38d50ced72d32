//go:build linux

// The lab and its sockets are Linux only (netlab, raw socket options).

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/mdlayher/ndp"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestBootTime measures, and asserts nothing about, how long a BIOS iPXE
// boot (SeaBIOS + iPXE ROM → script → kernel + initrd over HTTP) and a
// UEFI boot (OVMF → ipxe.efi → the same) take to the kickstart marker,
// served by mtftpd with dhcp.router_advert off and auto and by dnsmasq +
// busybox httpd with the same files, MTFTPD_BOOTTIME boots each
// (docs/protocols.md §13.3). The lab has
// link-local IPv6 and no router; a listener on client c1 times the DHCP
// broadcasts and router solicitations, and the server log's lines are
// timed as they arrive.
func TestBootTime(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MTFTPD_BOOTTIME"))
	if n <= 0 {
		t.Skip("a measurement: set MTFTPD_BOOTTIME=N to boot N times per case")
	}
	requireTools(t, "qemu-system-x86_64")
	requireFiles(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/lib/ipxe/qemu/pxe-e1000.rom")
	lab := netlab.New(t, netlab.Options{Clients: 1, Taps: 1, IPv6: true})
	root := bootFiles(t, httpBase)
	obs := observe(t, lab)
	servers := []bootServer{mtftpdRAOff, mtftpdRA, dnsmasqPeer}
	type result struct {
		fw     string
		server bootServer
		phases []phase
	}
	var results []result
	for _, fw := range []string{"bios-ipxe", "uefi"} {
		for i := range n {
			// Interleaved, so that a change in the machine's load falls
			// on every server alike.
			for _, server := range servers {
				ph := bootOnce(t, lab, obs, root, fw, server)
				t.Logf("%s, %s, boot %d: %s", fw, server, i+1, ph)
				results = append(results, result{fw, server, ph})
			}
		}
	}
	// Means per case, phase by phase, and each phase's ratio to the peer's.
	var b strings.Builder
	for _, fw := range []string{"bios-ipxe", "uefi"} {
		means := map[bootServer]phases{}
		for _, server := range servers {
			var rs []phases
			for _, r := range results {
				if r.fw == fw && r.server == server {
					rs = append(rs, r.phases)
				}
			}
			means[server] = meanPhases(rs)
		}
		for _, server := range servers {
			fmt.Fprintf(&b, "\n%-9s %-26s mean of %d:", fw, server, n)
			for _, p := range means[server] {
				fmt.Fprintf(&b, " %s %.1fs", p.name, p.at.Seconds())
				if peer, ok := means[dnsmasqPeer].at(p.name); ok && server != dnsmasqPeer && peer > 0 {
					fmt.Fprintf(&b, " (%.2f×)", p.at.Seconds()/peer.Seconds())
				}
			}
		}
	}
	t.Log(b.String())
}

// phase is when something happened, from QEMU's start (or, for
// "solicitations", a count kept in at as that many seconds).
type phase struct {
	name string
	at   time.Duration
}

var netipAllRouters = netip.MustParseAddr("ff02::2")

type phases []phase

// at returns the time of the phase called name.
func (ps phases) at(name string) (time.Duration, bool) {
	for _, p := range ps {
		if p.name == name {
			return p.at, true
		}
	}
	return 0, false
}

// meanPhases averages runs phase by phase, in the order phases first
// appear; a phase missing from a run is averaged over the runs that have it.
func meanPhases(runs []phases) phases {
	sum := map[string]time.Duration{}
	count := map[string]int{}
	var names []string
	for _, r := range runs {
		for _, p := range r {
			if count[p.name] == 0 {
				names = append(names, p.name)
			}
			sum[p.name] += p.at
			count[p.name]++
		}
	}
	var out phases
	for _, name := range names {
		out = append(out, phase{name, sum[name] / time.Duration(count[name])})
	}
	return out
}

func (ps phases) String() string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s %.1fs", p.name, p.at.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// event is a timed line: a server log message or an observed packet.
type event struct {
	at   time.Time
	what string
}

// bootTimeline collects timed events.
type bootTimeline struct {
	mu  sync.Mutex
	evs []event
	buf []byte
}

func (l *bootTimeline) add(what string) {
	l.mu.Lock()
	l.evs = append(l.evs, event{time.Now(), what})
	l.mu.Unlock()
}

// Write takes the server's JSON log lines and records each finished
// transfer, HTTP request and log message as it arrives.
func (l *bootTimeline) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf = append(l.buf, p...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, append([]byte(nil), l.buf[:i]...))
		l.buf = l.buf[i+1:]
	}
	l.mu.Unlock()
	for _, line := range lines {
		var e struct{ Message, File, Outcome, Path string }
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		switch e.Message {
		case "transfer":
			l.add("tftp " + e.File + " " + e.Outcome)
		case "http":
			l.add("http " + e.Path)
		default:
			l.add("log " + e.Message)
		}
	}
	return len(p), nil
}

func (l *bootTimeline) since(t0 time.Time) []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []event
	for _, e := range l.evs {
		if !e.at.Before(t0) {
			out = append(out, e)
		}
	}
	return out
}

func (l *bootTimeline) has(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.evs {
		if strings.HasPrefix(e.what, prefix) {
			return true
		}
	}
	return false
}

// observe listens on client c1 for DHCP broadcasts to port 67 (DISCOVER,
// REQUEST) and for router solicitations and advertisements.
func observe(t *testing.T, lab *netlab.Lab) *bootTimeline {
	t.Helper()
	l := &bootTimeline{}
	var uc net.PacketConn
	var nc *ndp.Conn
	err := netlab.Enter(lab.NS("c1"), func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1) })
			return serr
		}}
		var err error
		if uc, err = lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:67"); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if nc, _, err = ndp.Listen(ifi, ndp.Unspecified); err != nil {
			return err
		}
		return nc.JoinGroup(netipAllRouters)
	})
	if err != nil {
		t.Fatalf("observer on c1: %v", err)
	}
	t.Cleanup(func() { uc.Close(); nc.Close() })
	go func() {
		b := make([]byte, 1500)
		for {
			n, _, err := uc.ReadFrom(b)
			if err != nil {
				return
			}
			if m, err := dhcpv4.FromBytes(b[:n]); err == nil && m.OpCode == dhcpv4.OpcodeBootRequest {
				l.add("dhcp " + m.MessageType().String() + " " + m.ClientHWAddr.String())
			}
		}
	}()
	go func() {
		for {
			m, _, _, err := nc.ReadFrom()
			if err != nil {
				return
			}
			switch m.(type) {
			case *ndp.RouterSolicitation:
				l.add("ipv6 RS")
			case *ndp.RouterAdvertisement:
				l.add("ipv6 RA")
			}
		}
	}()
	return l
}

// bootServer is one way of serving the lab's boot: mtftpd with
// dhcp.router_advert off or auto, or the classic peer (dnsmasq for DHCP
// and TFTP, busybox httpd for the script, kernel and initrd).
type bootServer string

const (
	mtftpdRAOff bootServer = "mtftpd router_advert=off"
	mtftpdRA    bootServer = "mtftpd router_advert=auto"
	dnsmasqPeer bootServer = "dnsmasq + busybox httpd"
)

// bootOnce starts server, boots firmware fw once and returns its phases.
func bootOnce(t *testing.T, lab *netlab.Lab, obs *bootTimeline, root, fw string, server bootServer) phases {
	t.Helper()
	logs := &bootTimeline{}
	var stop func()
	if server == dnsmasqPeer {
		stop = startPeerBoot(t, lab, root, logs)
	} else {
		stop = startMtftpdBoot(t, lab, root, server, logs)
	}
	defer stop()
	return timeBoot(t, lab, obs, logs, fw, string(server))
}

// startMtftpdBoot runs mtftpd in server mode and waits until it serves.
func startMtftpdBoot(t *testing.T, lab *netlab.Lab, root string, server bootServer, logs *bootTimeline) (stop func()) {
	t.Helper()
	ra := "off"
	if server == mtftpdRA {
		ra = "auto"
	}
	cfg := filepath.Join(t.TempDir(), "mtftpd.toml")
	os.WriteFile(cfg, []byte(serverConfig(root, `
[dhcp]
mode = "server"
router_advert = "`+ra+`"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"
`)), 0o644)
	cmd := lab.Command(context.Background(), "srv", mtftpdBin, "serve", "--config", cfg, "--log.level", "debug", "--log.format", "json")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	ready := []string{"log dhcp server listening", "log http mirror listening"}
	if ra == "auto" {
		ready = append(ready, "log ipv6: no router advertises here")
	}
	for _, s := range ready {
		if !waitFor(20*time.Second, func() bool { return logs.has(s) }) {
			stop()
			t.Fatalf("mtftpd (router_advert %s) did not log %q", ra, s)
		}
	}
	return stop
}

// startPeerBoot serves the same files the classic way: dnsmasq as DHCP
// server and TFTP server (ipxe.efi for UEFI PXE, the script's URL for
// iPXE, recognised by its user class), busybox httpd on the same port as
// mtftpd's mirror. Neither sends router advertisements or option 175.
// Their log lines become the timeline's events: dnsmasq's "sent
// <path> to" as "tftp <name> ok", httpd's "url:<path>" as "http <path>".
func startPeerBoot(t *testing.T, lab *netlab.Lab, root string, logs *bootTimeline) (stop func()) {
	t.Helper()
	requireTools(t, "dnsmasq", "busybox")
	ctx := context.Background()
	tr := &peerLogs{timeline: logs}
	dm := lab.Command(ctx, "srv", "dnsmasq", "--no-daemon", "--port=0", "--interface=eth0", "--bind-interfaces",
		"--user=root", "--dhcp-range=192.0.2.150,192.0.2.199,1h",
		"--dhcp-leasefile="+filepath.Join(t.TempDir(), "dnsmasq.leases"),
		"--enable-tftp", "--tftp-root="+root,
		"--dhcp-userclass=set:ipxe,iPXE",
		"--dhcp-match=set:efi64,option:client-arch,7",
		"--dhcp-boot=tag:ipxe,"+httpBase+"/boot.ipxe",
		"--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
		"--log-dhcp", "--log-facility=-")
	hd := lab.Command(ctx, "srv", "busybox", "httpd", "-f", "-vv", "-p", netlab.ServerAddr+":8080", "-h", root)
	dm.Stdout, dm.Stderr = tr, tr
	hd.Stdout, hd.Stderr = tr, tr
	if err := dm.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	if err := hd.Start(); err != nil {
		dm.Process.Kill()
		dm.Wait()
		t.Fatalf("busybox httpd: %v", err)
	}
	stop = func() {
		for _, c := range []*exec.Cmd{dm, hd} {
			c.Process.Kill()
			c.Wait()
		}
	}
	if !waitFor(20*time.Second, func() bool { return tr.seen("DHCP, IP range") && tr.seen("TFTP root is") }) {
		stop()
		t.Fatalf("dnsmasq did not start:\n%s", tr.String())
	}
	if out, err := lab.Run(ctx, "srv", "curl", "-sf", "-o", "/dev/null", httpBase+"/ks.cfg"); err != nil {
		stop()
		t.Fatalf("busybox httpd does not serve: %v: %s\n%s", err, out, tr.String())
	}
	return stop
}

// peerLogs turns dnsmasq's and busybox httpd's log lines into timeline
// events as they arrive, and keeps the text for error messages.
type peerLogs struct {
	timeline *bootTimeline
	mu       sync.Mutex
	text     strings.Builder
	partial  []byte
}

func (p *peerLogs) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.text.Write(b)
	p.partial = append(p.partial, b...)
	var lines []string
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, string(p.partial[:i]))
		p.partial = p.partial[i+1:]
	}
	p.mu.Unlock()
	for _, line := range lines {
		if i := strings.Index(line, "url:"); i >= 0 {
			path, _, _ := strings.Cut(line[i+len("url:"):], "?")
			p.timeline.add("http " + strings.TrimSpace(path))
		} else if i := strings.Index(line, " sent "); i >= 0 && strings.Contains(line, "tftp") {
			file, _, _ := strings.Cut(line[i+len(" sent "):], " to ")
			p.timeline.add("tftp " + filepath.Base(file) + " ok")
		}
	}
	return len(b), nil
}

func (p *peerLogs) seen(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Contains(p.text.String(), s)
}

func (p *peerLogs) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return tail(p.text.String(), 4000)
}

// timeBoot boots firmware fw once against whatever serves the lab and
// returns its phases, from the observer's broadcasts and the server's
// timed log lines.
func timeBoot(t *testing.T, lab *netlab.Lab, obs, logs *bootTimeline, fw, server string) phases {
	t.Helper()
	var args []string
	switch fw {
	case "bios-ipxe":
		args = biosQEMU("tap1", biosMAC)
	default:
		vars := freshVars(t, "/usr/share/OVMF/OVMF_VARS_4M.fd")
		args = []string{"-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
			"-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=n0,mac=" + uefiMAC + ",romfile="}
	}
	testutil.Heavy(t) // taken before t0, so the wait for a turn is not timed
	var t0 time.Time
	var r qemuResult
	// The guest kernel under TCG on a loaded host sometimes panics early
	// ("IO-APIC + timer doesn't work"): that boot is not timed, the next
	// one is.
	for try := 1; ; try++ {
		t0 = time.Now()
		r = runQEMU(t, lab, 5*time.Minute, args...)
		if strings.Contains(r.Serial, Marker) {
			break
		}
		if try == 3 || !strings.Contains(r.Serial, "Kernel panic") {
			t.Fatalf("%s, %s: no marker (qemu: %v)\nserial:\n%s", fw, server, r.Err, tail(r.Serial, 3000))
		}
		t.Logf("%s, %s: the guest kernel panicked (TCG); booting again", fw, server)
	}
	evs := append(obs.since(t0), logs.since(t0)...)
	first := func(prefix string, after time.Duration) (time.Duration, bool) {
		best := time.Duration(-1)
		for _, e := range evs {
			d := e.at.Sub(t0)
			if d >= after && strings.HasPrefix(e.what, prefix) && (best < 0 || d < best) {
				best = d
			}
		}
		return best, best >= 0
	}
	var ps phases
	mark := func(name, prefix string, after time.Duration) time.Duration {
		d, ok := first(prefix, after)
		if ok {
			ps = append(ps, phase{name, d})
			return d
		}
		return after
	}
	at := mark("dhcp", "dhcp DISCOVER", 0)
	if fw == "uefi" {
		at = mark("nbp", "tftp ipxe.efi ok", at)
		at = mark("ipxe-dhcp", "dhcp DISCOVER", at)
	}
	req := mark("ipxe-request", "dhcp REQUEST", at)
	script := mark("script", "http /boot.ipxe", req)
	rs := 0
	for _, e := range evs {
		if d := e.at.Sub(t0); d >= at && d <= script && e.what == "ipv6 RS" {
			rs++
		}
	}
	at = mark("kernel", "http /vmlinuz", script)
	at = mark("initrd", "http /initrd.img", at)
	// The initrd's udhcpc: how long the kernel took to boot to its init.
	at = mark("linux-dhcp", "dhcp DISCOVER", at)
	mark("kickstart", "http /ks.cfg", at)
	ps = append(ps, phase{"marker", r.Elapsed}, phase{"ipv6-wait", script - req}, phase{"solicitations", time.Duration(rs) * time.Second})
	return ps
}
