// Package e2e boots real firmware (QEMU with SeaBIOS + the iPXE PXE ROM,
// OVMF's own UEFI PXE client, and ARM64 UEFI: AAVMF) and real DHCP
// clients against the mtftpd binary inside the network-namespace lab.
// Needs root, QEMU and the boot files (make test installs them); skips
// with the reason otherwise. Nothing leaves the lab namespaces.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

var mtftpdBin string

func TestMain(m *testing.M) {
	var err error
	if mtftpdBin, err = testutil.BuildBinary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testutil.Main(m)
}

// syncBuffer collects a process's output while it runs.
type syncBuffer = testutil.SyncBuffer

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cond()
}

// server is mtftpd running in the lab's server namespace.
type server struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	cfg  string
}

// startMtftpd runs `mtftpd serve --config` in namespace ns with the given
// TOML and waits until every service in it says it is listening.
func startMtftpd(t *testing.T, lab *netlab.Lab, ns, config string, services ...string) *server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mtftpd.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &server{logs: &syncBuffer{}, cfg: cfg}
	s.start(t, lab, ns, services)
	return s
}

func (s *server) start(t *testing.T, lab *netlab.Lab, ns string, services []string) {
	t.Helper()
	s.cmd = lab.Command(context.Background(), ns, mtftpdBin, "serve", "--config", s.cfg, "--log.level", "debug", "--log.format", "json")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := s.cmd
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for _, svc := range services {
		if !waitFor(15*time.Second, func() bool { return strings.Contains(s.logs.String(), svc) }) {
			t.Fatalf("mtftpd did not report %q:\n%s", svc, s.logs.String())
		}
	}
}

// stop ends the server with SIGTERM and waits for it.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		t.Fatal("mtftpd did not stop on SIGTERM")
	}
}

// qemuResult is what a boot printed on its serial console.
type qemuResult struct {
	Serial  string
	Err     error
	Stopped string        // the stop string that ended the run ("" when the VM exited or timed out)
	Elapsed time.Duration // from QEMU's start to the stop string, exit or timeout
}

// vmOptions changes how runVM and bootVMs run a machine. The zero value is
// runQEMU's behaviour.
type vmOptions struct {
	// Timeout bounds the run; 0 means 5 minutes.
	Timeout time.Duration
	// Reboot lets the guest reboot (no -no-reboot): a reboot is a new
	// firmware boot, which is how a reimaged machine comes back to the
	// network. Without it a guest reboot ends QEMU.
	Reboot bool
	// Stop ends the run as soon as the serial console shows any of these;
	// nil means the kickstart initrd's marker and failure lines.
	Stop []string
	// Until, if set, also ends the run once it returns true (polled with
	// the serial console): for what only the server sees, such as a
	// firmware's boot menu that never reaches the serial console.
	Until func() bool
	// QEMU is the emulator; "" means qemu-system-x86_64.
	QEMU string
}

// qemu is the emulator the options name.
func (o vmOptions) qemu() string {
	if o.QEMU == "" {
		return "qemu-system-x86_64"
	}
	return o.QEMU
}

// defaultStop is what the kickstart initrd prints when it is done.
var defaultStop = []string{Marker, "kickstart fetch failed", "end Kernel panic"}

// runQEMU boots a machine on lab tap `tap` inside the switch namespace and
// returns its serial output once the marker (or failure) appears, the VM
// powers off, or timeout passes. Software emulation only (docs/lab-notes.md,
// "QEMU and firmware": KVM is not usable here).
func runQEMU(t *testing.T, lab *netlab.Lab, timeout time.Duration, args ...string) qemuResult {
	t.Helper()
	return runVM(t, lab, vmOptions{Timeout: timeout}, args...)
}

// runVM is runQEMU with options.
func runVM(t *testing.T, lab *netlab.Lab, o vmOptions, args ...string) qemuResult {
	testutil.Heavy(t) // QEMU boots take turns with the other heavy tests (docs/design.md, "Lab rules")
	t.Helper()
	if o.QEMU != "" {
		requireTools(t, o.QEMU)
	} else {
		requireTools(t, "qemu-system-x86_64")
	}
	v, err := startVM(lab, o, filepath.Join(t.TempDir(), "serial.log"), args...)
	if err != nil {
		t.Fatal(err)
	}
	return v.wait()
}

// vmSpec is one machine for bootVMs.
type vmSpec struct {
	Name string   // for messages
	Args []string // QEMU arguments after the common ones
	Stop []string // overrides vmOptions.Stop for this machine when set
	// Until overrides vmOptions.Until for this machine when set.
	Until func() bool
}

// bootVMs starts every machine at once (in the lab's switch namespace, so
// their taps are on the lab bridge) and waits until each one shows one of
// its stop strings, exits or reaches o.Timeout. Results are in spec
// order. A QEMU that does not start fails the test after the others are
// stopped.
func bootVMs(t *testing.T, lab *netlab.Lab, o vmOptions, specs ...vmSpec) []qemuResult {
	testutil.Heavy(t) // QEMU boots take turns with the other heavy tests (docs/design.md, "Lab rules")
	t.Helper()
	requireTools(t, "qemu-system-x86_64")
	dir := t.TempDir()
	vms := make([]*vm, len(specs))
	for i, s := range specs {
		vo := o
		if s.Stop != nil {
			vo.Stop = s.Stop
		}
		if s.Until != nil {
			vo.Until = s.Until
		}
		v, err := startVM(lab, vo, filepath.Join(dir, fmt.Sprintf("serial-%d.log", i)), s.Args...)
		if err != nil {
			for _, started := range vms[:i] {
				started.kill()
			}
			t.Fatalf("vm %d (%s): %v", i, s.Name, err)
		}
		vms[i] = v
	}
	out := make([]qemuResult, len(vms))
	done := make(chan struct{}, len(vms))
	for i, v := range vms {
		go func() {
			out[i] = v.wait()
			done <- struct{}{}
		}()
	}
	for range vms {
		<-done // each wait is bounded by its timeout
	}
	return out
}

// vm is a running QEMU.
type vm struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan error
	out    *syncBuffer
	serial string
	stop   []string
	until  func() bool
	start  time.Time
}

// startVM starts QEMU (in the lab's switch namespace; with a nil lab in
// this process's namespaces, for machines without a NIC) with its serial
// console in the file serial.
func startVM(lab *netlab.Lab, o vmOptions, serial string, args ...string) (*vm, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Stop == nil {
		o.Stop = defaultStop
	}
	base := []string{"-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-serial", "file:" + serial}
	if !o.Reboot {
		base = append(base, "-no-reboot")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	var cmd *exec.Cmd
	if lab != nil {
		cmd = lab.Command(ctx, "sw", o.qemu(), append(base, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, o.qemu(), append(base, args...)...)
	}
	v := &vm{cmd: cmd, cancel: cancel, done: make(chan error, 1), out: &syncBuffer{}, serial: serial, stop: o.Stop, until: o.Until, start: time.Now()}
	cmd.Stdout, cmd.Stderr = v.out, v.out
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	go func() { v.done <- cmd.Wait() }()
	return v, nil
}

func (v *vm) read() string { b, _ := os.ReadFile(v.serial); return string(b) }

func (v *vm) kill() {
	v.cmd.Process.Kill()
	<-v.done
	v.cancel()
}

// wait returns once a stop string shows on the serial console (giving the
// guest 5 s to power off by itself), QEMU exits, or the timeout kills it.
func (v *vm) wait() qemuResult {
	defer v.cancel()
	for {
		select {
		case err := <-v.done:
			return qemuResult{Serial: v.read() + v.out.String(), Err: err, Elapsed: time.Since(v.start)}
		case <-time.After(500 * time.Millisecond):
			s := v.read()
			if v.until != nil && v.until() {
				v.cmd.Process.Kill()
				<-v.done
				return qemuResult{Serial: v.read(), Stopped: "until", Elapsed: time.Since(v.start)}
			}
			for _, m := range v.stop {
				if strings.Contains(s, m) {
					elapsed := time.Since(v.start)
					select {
					case <-v.done:
					case <-time.After(5 * time.Second):
						v.cmd.Process.Kill()
						<-v.done
					}
					return qemuResult{Serial: v.read(), Stopped: m, Elapsed: elapsed}
				}
			}
		}
	}
}

// requireTools stops the test (testutil.Unavailable) when a tool is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, "%s not installed: %v", tool, err)
		}
	}
}

// requireFiles is requireTools for files (firmware, ROMs, loaders).
func requireFiles(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			testutil.Unavailable(t, "%v", err)
		}
	}
}

// bootFiles lays out a TFTP/HTTP root for the classic workflow:
// pxelinux + menu, kernel + test initrd, iPXE for UEFI, an iPXE script
// and a kickstart.
func bootFiles(t *testing.T, httpBase string) string {
	t.Helper()
	root := t.TempDir()
	vmlinuz, release := kernelPath(t)
	cp := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			testutil.Unavailable(t, "boot file: %v", err)
		}
		p := filepath.Join(root, dst)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cp("/usr/lib/PXELINUX/pxelinux.0", "pxelinux.0")
	for _, m := range []string{"ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32"} {
		cp("/usr/lib/syslinux/modules/bios/"+m, m)
	}
	cp("/usr/lib/ipxe/ipxe.efi", "ipxe.efi")
	cp(vmlinuz, "vmlinuz")
	buildInitrd(t, release, filepath.Join(root, "initrd.img"))
	write := func(name, text string) {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pxelinux.cfg/default", fmt.Sprintf(`SERIAL 0 115200
UI menu.c32
MENU TITLE mtftpd e2e boot menu
TIMEOUT 10
DEFAULT install
LABEL install
  MENU LABEL Install over the network
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 quiet panic=1 inst.ks=%s/ks.cfg
`, httpBase))
	// initrd= on the command line: this iPXE (2019) hands the initrd to
	// the kernel's EFI stub as a file by that name.
	write("boot.ipxe", fmt.Sprintf(`#!ipxe
echo mtftpd e2e iPXE script for ${net0/mac}
kernel %[1]s/vmlinuz initrd=initrd.img console=ttyS0 quiet panic=1 inst.ks=%[1]s/ks.cfg
initrd %[1]s/initrd.img
boot
`, httpBase))
	write("ks.cfg", "# mtftpd-e2e-kickstart\ntext\nreboot\n")
	return root
}
