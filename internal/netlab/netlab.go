// Package netlab brings up the network-namespace test lab of
// scripts/netlab.sh for Go tests: a server namespace and N client namespaces
// on a Linux bridge in a switch namespace, with optional multicast snooping,
// loss and rate impairments, and taps for QEMU.
//
// It is a test-only helper and needs root. It never touches the root network
// namespace: every device, address, route, qdisc and nftables table it makes
// lives in a namespace of the lab, and every lab is removed by a t.Cleanup.
// Lab addresses are TEST-NET (RFC 5737); multicast stays in 239.255.0.0/16.
package netlab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ServerAddr is the server's address on eth0 of the srv namespace. The server
// also holds ServerAddr2, the gateway-less address of the second subnet that
// clients past MaxClientsNet1 use.
const (
	ServerAddr  = "192.0.2.1"
	ServerAddr2 = "198.51.100.1"
)

// MaxClients is the most clients a lab can have (scripts/netlab.sh).
const MaxClients = 200

// MaxClientsNet1 is the last client index numbered in 192.0.2.0/24:
// 100+154 = 254, the last host address of the /24.
const MaxClientsNet1 = 154

// Timeouts for the script; "up 200" takes about 4 s on 2 cores.
const (
	upTimeout   = 2 * time.Minute
	downTimeout = time.Minute
	cmdTimeout  = 30 * time.Second
)

// Options configures a lab. The zero value is a server and no clients on a
// flooding bridge.
type Options struct {
	Clients  int  // client namespaces c1..cN, 0..MaxClients
	Snooping bool // bridge multicast snooping with a querier (a managed switch)
	NoAddr   bool // clients get no IPv4 address (DHCP tests)
	Taps     int  // tap1..tapN on the bridge in the sw namespace, for QEMU
	IPv6     bool // IPv6 link-local addresses (off by default: a quiet wire)
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	Prefix string // namespace names are Prefix + "-sw", "-srv", "-c1", ...
	Opts   Options

	scriptPath string
}

// ClientAddr returns the IPv4 address of client i (1-based):
// 192.0.2.(100+i) up to MaxClientsNet1, 198.51.100.(i-54) past it.
func ClientAddr(i int) string {
	if i <= MaxClientsNet1 {
		return fmt.Sprintf("192.0.2.%d", 100+i)
	}
	return fmt.Sprintf("198.51.100.%d", i-54)
}

// Client returns the short namespace name of client i: "c1", "c2", ...
func Client(i int) string { return "c" + strconv.Itoa(i) }

// New brings up a lab with a fresh prefix ("m" and 4 random hex digits) and
// registers its removal with t.Cleanup. It skips the test, saying why, when
// not root, not on Linux, or when ip, nft or bash is missing; it fails the
// test when the script fails.
func New(t testing.TB, o Options) *Lab {
	t.Helper()
	if reason := unavailable(o); reason != "" {
		t.Skip("netlab: " + reason)
	}
	if o.Clients < 0 || o.Clients > MaxClients {
		t.Fatalf("netlab: Clients = %d, want 0..%d", o.Clients, MaxClients)
	}
	script := ScriptPath()
	if script == "" {
		t.Skip("netlab: scripts/netlab.sh not found above " + packageDir() + " (set NETLAB_SCRIPT)")
	}
	prefix, err := freePrefix()
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	reapOrphans(script)
	l := &Lab{Prefix: prefix, Opts: o, scriptPath: script}
	// The owner file lets a later run remove this lab if this process dies
	// before its cleanup runs (go test -timeout panics skip t.Cleanup).
	os.MkdirAll(ownerDir, 0o755)
	os.WriteFile(filepath.Join(ownerDir, prefix+".owner"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	// Registered before "up" so that even a lab left half made by a killed
	// script goes away.
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("netlab: %v", err)
		}
		os.Remove(filepath.Join(ownerDir, prefix+".owner"))
	})
	args := []string{"up", strconv.Itoa(o.Clients)}
	if o.Snooping {
		args = append(args, "--snooping", "on")
	}
	if o.NoAddr {
		args = append(args, "--no-addr")
	}
	if o.IPv6 {
		args = append(args, "--ipv6")
	}
	if o.Taps > 0 {
		args = append(args, "--taps", strconv.Itoa(o.Taps))
	}
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	if _, err := l.script(ctx, args...); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return l
}

// ownerDir holds one "<prefix>.owner" file per Go-made lab, with the pid
// of the test process that owns it.
const ownerDir = "/run/mtftpd-netlab/owners"

// reapOrphans removes labs whose owning test process is gone: a test
// binary killed by go test's -timeout leaves its namespaces (and any QEMU
// in them) behind, since t.Cleanup never runs.
func reapOrphans(script string) {
	files, _ := filepath.Glob(filepath.Join(ownerDir, "*.owner"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 0 && processAlive(pid) {
			continue // owner alive (EPERM cannot happen as root)
		}
		prefix := strings.TrimSuffix(filepath.Base(f), ".owner")
		ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
		exec.CommandContext(ctx, "bash", script, "-p", prefix, "down").Run()
		cancel()
		os.Remove(f)
	}
}

// unavailable says why a lab cannot run here, or "" when it can.
func unavailable(o Options) string {
	if runtime.GOOS != "linux" {
		return "needs Linux network namespaces (GOOS=" + runtime.GOOS + ")"
	}
	if os.Geteuid() != 0 {
		return "needs root for network namespaces (run the tests as root; CI does)"
	}
	for _, tool := range []string{"bash", "ip", "nft", "tc", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found (Debian packages: iproute2, nftables)"
		}
	}
	if o.Taps > 0 {
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return "taps need /dev/net/tun: " + err.Error()
		}
	}
	return ""
}

// freePrefix picks "m" + 4 random hex digits that no namespace uses yet.
func freePrefix() (string, error) {
	for range 16 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		p := "m" + hex.EncodeToString(b[:])
		if m, _ := filepath.Glob("/run/netns/" + p + "-*"); len(m) == 0 {
			return p, nil
		}
	}
	return "", errors.New("no free lab prefix after 16 tries")
}

// ScriptPath returns the path of scripts/netlab.sh: $NETLAB_SCRIPT if set,
// else found by walking up from this package's source directory (or, in a
// -trimpath build, from the working directory) to the module root. It
// returns "" when the script cannot be found.
func ScriptPath() string {
	if p := os.Getenv("NETLAB_SCRIPT"); p != "" {
		return p
	}
	for _, dir := range []string{packageDir(), cwd()} {
		for d := dir; d != "" && filepath.IsAbs(d); {
			if fileExists(filepath.Join(d, "go.mod")) {
				p := filepath.Join(d, "scripts", "netlab.sh")
				if fileExists(p) {
					return p
				}
				break
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return ""
}

func packageDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return filepath.Dir(file)
}

func cwd() string {
	d, _ := os.Getwd()
	return d
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// NS returns the full namespace name of a short one: "srv" -> "m1a2b-srv".
func (l *Lab) NS(name string) string { return l.Prefix + "-" + name }

// Command returns a command that runs name inside namespace ns ("srv", "c1",
// "sw", ...) through ip netns exec, which also gives it the namespace's own
// /sys. ip execs the command, so cancelling ctx kills the command itself.
func (l *Lab) Command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	a := append([]string{"netns", "exec", l.NS(ns), name}, args...)
	return exec.CommandContext(ctx, "ip", a...)
}

// Run runs name inside namespace ns and returns its combined output.
func (l *Lab) Run(ctx context.Context, ns string, name string, args ...string) (string, error) {
	out, err := l.Command(ctx, ns, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", name, l.NS(ns), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Impair runs "netlab.sh impair port args...": port is "srv", "c1", ...,
// a tap or "all"; args are "loss", PCT or "rate", MBIT or "clear".
func (l *Lab) Impair(port string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	_, err := l.script(ctx, append([]string{"impair", port}, args...)...)
	return err
}

// Counters returns the byte and packet counters of eth0 in namespace ns
// ("srv", "c1", ...) — what crossed the wire, for bytes-on-the-wire checks.
func (l *Lab) Counters(ns string) (rxBytes, txBytes, rxPkts, txPkts uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := l.script(ctx, "counters", ns)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	vals := map[string]*uint64{"rx_bytes": &rxBytes, "tx_bytes": &txBytes, "rx_packets": &rxPkts, "tx_packets": &txPkts}
	seen := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		p := vals[k]
		if !ok || p == nil {
			continue
		}
		if *p, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("netlab counters %s: %q: %w", ns, sc.Text(), err)
		}
		seen++
	}
	if seen != len(vals) {
		return 0, 0, 0, 0, fmt.Errorf("netlab counters %s: got %d of %d counters in %q", ns, seen, len(vals), out)
	}
	return rxBytes, txBytes, rxPkts, txPkts, nil
}

// Down stops what still runs in the lab's namespaces and deletes them. It
// is idempotent: calling it again, or on a lab already gone, returns nil.
func (l *Lab) Down() error {
	ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
	defer cancel()
	_, err := l.script(ctx, "down")
	return err
}

// script runs scripts/netlab.sh -p Prefix args... and returns its stdout.
func (l *Lab) script(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{l.scriptPath, "-p", l.Prefix}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// The script's children (ip, nft) inherit stdout; do not wait forever
	// for a pipe one of them might hold after a kill.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("netlab.sh -p %s %s: %w: %s", l.Prefix, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
