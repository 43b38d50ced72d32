package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// localBootFailed is what the test's loader configs print when their
// local-boot command returned instead of booting the disk.
const localBootFailed = "MTFTPD-E2E-LOCALBOOT-FAILED"

// localBootStop ends a local-boot run: the disk's marker, a loader that
// gave up, or firmware with nothing left to boot.
var localBootStop = []string{LocalBootMarker, localBootFailed, "Kernel panic", "No bootable device", "Boot failed"}

// iPXE scripts that send a machine to its disk.
const (
	// exit leaves iPXE; the firmware goes on to the next boot device.
	ipxeExit = "#!ipxe\necho mtftpd e2e localboot: exit\nexit\necho " + localBootFailed + " exit returned\n"
	// exit 1 leaves iPXE with a failure.
	ipxeExit1 = "#!ipxe\necho mtftpd e2e localboot: exit 1\nexit 1\necho " + localBootFailed + " exit returned\n"
	// sanboot --drive 0x80 boots the first BIOS hard disk (INT 13h) from
	// inside iPXE.
	// chain localboot.efi: a GRUB that starts the disk's EFI loader
	// (examples/reimage-room/localboot-grub.cfg), for UEFI.
	ipxeGrubChain = "#!ipxe\necho mtftpd e2e localboot: grub\nchain http://192.0.2.1:8080/localboot.efi || echo " + localBootFailed + " chain: ${errno}\nexit\n"
	ipxeSanboot   = "#!ipxe\necho mtftpd e2e localboot: sanboot\nsanboot --no-describe --drive 0x80 || echo " + localBootFailed + " sanboot: ${errno}\nexit\n"
)

// pxelinuxLocal is pxelinux.cfg/default that boots the local disk.
const pxelinuxLocal = `SERIAL 0 115200
DEFAULT local
PROMPT 0
LABEL local
  LOCALBOOT 0
`

var (
	goldenOnce sync.Once
	goldenPath string
)

// sharedGoldenDisk builds the golden disk once per test binary, next to
// the mtftpd binary (TestMain removes both), and returns its path. VMs use
// it with snapshot=on (diskArgs), so it never changes.
func sharedGoldenDisk(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	goldenOnce.Do(func() {
		p := filepath.Join(filepath.Dir(mtftpdBin), "golden.raw")
		buildGoldenDisk(t, p)
		goldenPath = p
	})
	if goldenPath == "" {
		t.Fatal("the golden disk could not be built (see the first test that tried)")
	}
	return goldenPath
}

// localBootRoot lays out a TFTP/HTTP root whose loaders all send the
// machine to its disk: boot.ipxe (script), ipxe.efi for OVMF's PXE, and
// pxelinux.0 with pxelinux.cfg/default = LOCALBOOT 0.
func localBootRoot(t *testing.T, script string) string {
	t.Helper()
	root := t.TempDir()
	requireFiles(t, "/usr/lib/ipxe/ipxe.efi", "/usr/lib/PXELINUX/pxelinux.0", "/usr/lib/syslinux/modules/bios/ldlinux.c32")
	copyFile(t, "/usr/lib/ipxe/ipxe.efi", filepath.Join(root, "ipxe.efi"))
	copyFile(t, "/usr/lib/PXELINUX/pxelinux.0", filepath.Join(root, "pxelinux.0"))
	copyFile(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", filepath.Join(root, "ldlinux.c32"))
	must(t, os.MkdirAll(filepath.Join(root, "pxelinux.cfg"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "pxelinux.cfg/default"), []byte(pxelinuxLocal), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "boot.ipxe"), []byte(script), 0o644))
	buildLocalbootEFI(t, filepath.Join(root, "localboot.efi"))
	return root
}

// buildLocalbootEFI builds localboot.efi as examples/reimage-room/
// localboot-grub.cfg tells the admin to: a standalone GRUB that starts
// the first disk's EFI loader.
func buildLocalbootEFI(t *testing.T, out string) {
	t.Helper()
	requireTools(t, "grub-mkstandalone")
	cfg, err := filepath.Abs("../examples/reimage-room/localboot-grub.cfg")
	must(t, err)
	cmd := exec.Command("grub-mkstandalone", "-O", "x86_64-efi", "-o", out,
		"--modules=part_gpt part_msdos fat chain search search_fs_file echo sleep",
		"--locales=", "--fonts=", "--themes=", "boot/grub/grub.cfg="+cfg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("grub-mkstandalone: %v\n%s", err, b)
	}
}

// TestLocalBootAfterNetwork: the firmware boots the network first (NIC
// bootindex=1, disk bootindex=2), mtftpd's DHCP sends it to a loader
// whose config sends it to its disk, and the golden disk boots. One
// subtest per firmware and local-boot command.
func TestLocalBootAfterNetwork(t *testing.T) {
	requireSlow(t)
	requireTools(t, "qemu-system-x86_64")
	disk := sharedGoldenDisk(t)
	cases := []struct {
		name     string
		disk     string // the disk's serial: the machine's name (≤ 20 bytes)
		uefi     bool
		script   string // boot.ipxe
		pxelinux bool   // hand BIOS machines pxelinux.0 instead of the iPXE script
		boots    bool   // the disk boots; otherwise it must not, and:
		failure  string // the serial shows this (the command visibly failed), or
		silent   bool   // the firmware never reaches the disk before the timeout (waits 100 s)
		loader   string // the disk's loader that must run
		fetched  string // what the server must have served
	}{
		{name: "seabios/ipxe-exit", disk: "sb-exit", script: ipxeExit, boots: true, loader: "extlinux", fetched: "http /boot.ipxe"},
		{name: "seabios/ipxe-sanboot", disk: "sb-sanboot", script: ipxeSanboot, boots: true, loader: "extlinux", fetched: "http /boot.ipxe"},
		{name: "seabios/pxelinux-localboot", disk: "sb-pxelinux", script: ipxeExit, pxelinux: true, boots: true, loader: "extlinux", fetched: "pxelinux.cfg/default ok"},
		// UEFI iPXE has no INT 13h drives: "Boot from SAN device 0x80
		// failed: No such device".
		{name: "ovmf/ipxe-sanboot", disk: "ovmf-sanboot", uefi: true, script: ipxeSanboot, failure: localBootFailed + " sanboot: 0x2c222087", fetched: "http /boot.ipxe"},
		// Debian 12's ipxe.efi (2019) prints its "Press Ctrl-B" banner
		// after the script exits, and then the serial stays silent: OVMF
		// never tries the disk (watched for 200 s).
		{name: "ovmf/grub-chain", disk: "ovmf-grub", uefi: true, script: ipxeGrubChain, boots: true, loader: "grub", fetched: "http /localboot.efi"},
		{name: "ovmf/ipxe-exit", disk: "ovmf-exit", uefi: true, script: ipxeExit, silent: true, fetched: "http /boot.ipxe"},
		{name: "ovmf/ipxe-exit-1", disk: "ovmf-exit-1", uefi: true, script: ipxeExit1, silent: true, fetched: "http /boot.ipxe"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			timeout := 4 * time.Minute
			if c.silent {
				timeout = 100 * time.Second
			}
			lab := netlab.New(t, netlab.Options{Taps: 1})
			root := localBootRoot(t, c.script)
			boot := "# no [[dhcp.boot]]: the built-in rules (UEFI x64 → ipxe.efi, iPXE → {{.HTTP}}/boot.ipxe)"
			if c.pxelinux {
				boot = "[[dhcp.boot]]\nname = \"bios\"\narch = [0]\nfile = \"pxelinux.0\"\n"
			}
			srv := startMtftpd(t, lab, "srv", serverConfig(root, `
[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"

`+boot), "tftp server listening", "http mirror listening", "dhcp server listening")
			name := c.disk
			var args []string
			if c.uefi {
				args = append(ovmfArgs(t), uefiNIC("tap1", uefiMAC, 1)...)
			} else {
				args = append(seabiosArgs(), biosNIC("tap1", biosMAC, 1)...)
			}
			args = append(args, diskArgs(disk, name, 2, true)...)
			r := bootVMs(t, lab, vmOptions{Timeout: timeout, Stop: localBootStop}, vmSpec{Name: name, Args: args})[0]
			logs := srv.logs.String()
			t.Logf("%s: stopped on %q after %v (TCG)", c.name, r.Stopped, r.Elapsed.Round(100*time.Millisecond))
			requireInOrder(t, transfers(logs), c.fetched)
			want := localBootLine(name) + c.loader
			if c.boots && !strings.Contains(r.Serial, want) {
				t.Fatalf("no %q after the network boot (stopped on %q after %v, qemu: %v):\n%s\n…\n%s\nserver:\n%s",
					want, r.Stopped, r.Elapsed, r.Err, head(r.Serial, 3000), tail(r.Serial, 3000), tail(logs, 3000))
			}
			if !c.boots {
				if strings.Contains(r.Serial, LocalBootMarker) {
					t.Fatalf("the disk booted; this case is documented as not booting (docs/imaging.md):\n%s", tail(r.Serial, 4000))
				}
				if c.failure != "" && !strings.Contains(r.Serial, c.failure) {
					t.Fatalf("no %q on the serial console (stopped on %q):\n%s", c.failure, r.Stopped, tail(r.Serial, 4000))
				}
				if c.silent && (r.Stopped != "" || !strings.Contains(r.Serial, "mtftpd e2e localboot: exit")) {
					t.Fatalf("the script did not run, or the run ended on %q:\n%s", r.Stopped, tail(r.Serial, 4000))
				}
			}
		})
	}
}

// requireSlow skips the firmware runs that `make e2e-slow` runs
// (MTFTPD_E2E_SLOW=1): every local-boot command on every firmware, the
// ones that fail included. `make test` proves the two the reimaging loop
// uses (iPXE exit on SeaBIOS, localboot.efi on OVMF) in TestReimageRoom.
func requireSlow(t *testing.T) {
	t.Helper()
	if os.Getenv("MTFTPD_E2E_SLOW") == "" {
		t.Skip("a slow firmware run: make e2e-slow (MTFTPD_E2E_SLOW=1) runs it")
	}
}
