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
// with dhcp.router_advert off and auto, MTFTPD_BOOTTIME boots each
// (docs/protocols.md §13; results in docs/benchmarks.md). The lab has
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
	type result struct {
		fw, ra string
		phases []phase
	}
	var results []result
	for _, fw := range []string{"bios-ipxe", "uefi"} {
		for _, ra := range []string{"off", "auto"} {
			for i := range n {
				ph := bootOnce(t, lab, obs, root, fw, ra)
				t.Logf("%s router_advert=%s boot %d: %s", fw, ra, i+1, ph)
				results = append(results, result{fw, ra, ph})
			}
		}
	}
	// Means per case, phase by phase.
	var b strings.Builder
	for _, fw := range []string{"bios-ipxe", "uefi"} {
		for _, ra := range []string{"off", "auto"} {
			sum := map[string]time.Duration{}
			var names []string
			k := 0
			for _, r := range results {
				if r.fw != fw || r.ra != ra {
					continue
				}
				k++
				for _, p := range r.phases {
					if _, ok := sum[p.name]; !ok {
						names = append(names, p.name)
					}
					sum[p.name] += p.at
				}
			}
			fmt.Fprintf(&b, "\n%-9s router_advert=%-4s mean of %d:", fw, ra, k)
			for _, name := range names {
				fmt.Fprintf(&b, " %s %.1fs", name, (sum[name] / time.Duration(k)).Seconds())
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

// bootOnce starts mtftpd with router_advert ra, boots firmware fw once and
// returns its phases.
func bootOnce(t *testing.T, lab *netlab.Lab, obs *bootTimeline, root, fw, ra string) phases {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mtftpd.toml")
	os.WriteFile(cfg, []byte(serverConfig(root, `
[dhcp]
mode = "server"
router_advert = "`+ra+`"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"
`)), 0o644)
	logs := &bootTimeline{}
	cmd := lab.Command(context.Background(), "srv", mtftpdBin, "serve", "--config", cfg, "--log.level", "debug", "--log.format", "json")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ready := []string{"log dhcp server listening", "log http mirror listening"}
	if ra == "auto" {
		ready = append(ready, "log ipv6: no router advertises here")
	}
	for _, s := range ready {
		if !waitFor(20*time.Second, func() bool { return logs.has(s) }) {
			t.Fatalf("mtftpd (router_advert %s) did not log %q", ra, s)
		}
	}
	var args []string
	switch fw {
	case "bios-ipxe":
		args = biosQEMU("tap1", biosMAC)
	default:
		vars := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
		b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(vars, b, 0o644)
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
			t.Fatalf("%s router_advert=%s: no marker (qemu: %v)\nserial:\n%s", fw, ra, r.Err, tail(r.Serial, 3000))
		}
		t.Logf("%s router_advert=%s: the guest kernel panicked (TCG); booting again", fw, ra)
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
	mark("kickstart", "http /ks.cfg", at)
	ps = append(ps, phase{"marker", r.Elapsed}, phase{"ipv6-wait", script - req}, phase{"solicitations", time.Duration(rs) * time.Second})
	return ps
}
