// Package e2e boots real firmware (QEMU with SeaBIOS + the iPXE PXE ROM,
// and OVMF's own UEFI PXE client) and real DHCP clients against the
// mtftpd binary inside the network-namespace lab. Needs root, QEMU and
// the boot files (make test installs them); skips with the reason
// otherwise. Nothing leaves the lab namespaces.
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
	dir, err := os.MkdirTemp("", "mtftpd-e2e-")
	if err != nil {
		panic(err)
	}
	mtftpdBin = filepath.Join(dir, "mtftpd")
	build := exec.Command("go", "build", "-o", mtftpdBin, "../cmd/mtftpd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
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
	Serial string
	Err    error
}

// runQEMU boots a machine on lab tap `tap` inside the switch namespace and
// returns its serial output once the marker (or failure) appears, the VM
// powers off, or timeout passes. Software emulation only (docs/lab-notes.md,
// "QEMU and firmware": KVM is not usable here).
func runQEMU(t *testing.T, lab *netlab.Lab, timeout time.Duration, args ...string) qemuResult {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (make test installs qemu-system-x86)")
	}
	serial := filepath.Join(t.TempDir(), "serial.log")
	base := []string{"-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "file:" + serial}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := lab.Command(ctx, "sw", "qemu-system-x86_64", append(base, args...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	read := func() string { b, _ := os.ReadFile(serial); return string(b) }
	var err error
	for {
		select {
		case err = <-done:
			return qemuResult{Serial: read() + out.String(), Err: err}
		case <-time.After(500 * time.Millisecond):
			s := read()
			if strings.Contains(s, Marker) || strings.Contains(s, "kickstart fetch failed") || strings.Contains(s, "end Kernel panic") {
				// Let it power off by itself for a moment, then stop it.
				select {
				case err = <-done:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-done
				}
				return qemuResult{Serial: read(), Err: nil}
			}
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
			t.Skipf("boot file: %v (make test installs pxelinux, syslinux-common, ipxe)", err)
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
