package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// arm64Cache holds the arm64 files scripts/test-deps.sh unpacks from
// Debian's arm64 packages (they cannot be installed on amd64):
// grubnetaa64.efi (grub-efi-arm64-signed, Debian's signed network grub),
// vmlinuz (linux-image-arm64's kernel) and busybox (busybox-static).
const arm64Cache = "/var/cache/mtftpd-test/arm64"

// arm64MAC is the ARM64 UEFI machine's NIC.
const arm64MAC = "52:54:00:e2:e0:0b"

// grubMarker is what the per-host grub.cfg template prints: the MAC and
// the option 93 architecture that mtftpd's lease recorded for the
// machine, so it shows the config was rendered for this machine as an
// ARM64 UEFI client (arch 11).
const grubMarker = "MTFTPD-ARM64-GRUB mac=" + arm64MAC + " arch=11"

// arm64LinuxMarker is what the arm64 test initrd's /init prints.
const arm64LinuxMarker = "MTFTPD-ARM64-LINUX-OK"

// arm64Init is /init of the arm64 test initrd (busybox-static, no
// network, no modules): it prints the marker with the machine type and
// the MAC that the per-host grub.cfg put on the kernel command line, then
// powers off.
const arm64Init = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
host=$(/bin/busybox sed -n 's/.*mtftpd\.host=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "` + arm64LinuxMarker + ` $(/bin/busybox uname -m) host=$host"
/bin/busybox poweroff -f
`

// aavmfQEMU is an ARM64 UEFI machine (QEMU virt, AAVMF) on tap1 whose
// only boot option is its NIC: AAVMF's PXE client over virtio-net
// (romfile= empty: AAVMF has its own virtio-net driver).
func aavmfQEMU(t *testing.T, mac string) []string {
	t.Helper()
	code := "/usr/share/AAVMF/AAVMF_CODE.fd"
	requireFiles(t, code)
	fresh := freshVars(t, "/usr/share/AAVMF/AAVMF_VARS.fd")
	// cortex-a57 rather than max: fewer CPU features to emulate under TCG.
	return []string{"-machine", "virt", "-cpu", "cortex-a57", "-m", "1024",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + fresh,
		"-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac + ",romfile="}
}

// arm64Root lays out the TFTP root (Debian's signed grubnetaa64.efi, the
// arm64 kernel and a busybox initrd; with shim also Debian's signed
// shimaa64.efi, and the same grub as grubaa64.efi, the name shim loads
// from its own directory) and a templates directory with grub's per-host
// config, grub/grub.cfg: the signed grub's built-in config sources
// $prefix/grub.cfg, its prefix being /grub on the TFTP server it came
// from. The template prints the grub marker and boots the kernel with the
// machine's MAC on its command line.
func arm64Root(t *testing.T, shim bool) (root, templates string) {
	t.Helper()
	files := map[string]string{
		"grubnetaa64.efi": filepath.Join(arm64Cache, "grubnetaa64.efi"),
		"vmlinuz":         filepath.Join(arm64Cache, "vmlinuz"),
	}
	if shim {
		files["shimaa64.efi"] = filepath.Join(arm64Cache, "shimaa64.efi")
		files["grubaa64.efi"] = files["grubnetaa64.efi"]
	}
	bb := filepath.Join(arm64Cache, "busybox")
	requireFiles(t, bb)
	root, templates = t.TempDir(), t.TempDir()
	write := func(dir, name string, b []byte) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, src := range files {
		requireFiles(t, src)
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		write(root, name, b)
	}
	buildInitrdWith(t, bb, "", filepath.Join(root, "initrd.img"), arm64Init, nil)
	write(templates, "grub/grub.cfg", []byte(`echo "MTFTPD-ARM64-GRUB mac={{.MAC}} arch={{.Arch}}"
linux /vmlinuz console=ttyAMA0 panic=-1 mtftpd.host={{.MAC}}
initrd /initrd.img
boot
`))
	return root, templates
}

// arm64Config is mtftpd's config for the ARM64 machine: DHCP server with
// a boot rule for ARM64 UEFI (option 93 = 11, by its name) naming the
// loader.
func arm64Config(root, templates, loader string) string {
	return serverConfig(root, fmt.Sprintf(`
[templates]
dir = %q

[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"

[[dhcp.boot]]
name = "uefi-arm64"
arch = ["uefi-arm64"]
file = %q
`, templates, loader))
}

// bootARM64 boots the AAVMF machine by PXE from mtftpd, with shim first
// or grub alone, and fails unless grub printed the marker from its
// per-host config, the kernel's /init its own, and the server saw the
// loaders, the config, the kernel and the initrd fetched in that order
// and offered to an ARM64 UEFI client.
func bootARM64(t *testing.T, shim bool) {
	t.Helper()
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root, templates := arm64Root(t, shim)
	loaders := []string{"grubnetaa64.efi ok"}
	if shim {
		loaders = []string{"shimaa64.efi ok", "grubaa64.efi ok"}
	}
	srv := startMtftpd(t, lab, "srv", arm64Config(root, templates, strings.TrimSuffix(loaders[0], " ok")), "tftp server listening", "dhcp server listening")
	want := arm64LinuxMarker + " aarch64 host=" + arm64MAC
	// "Shell>": AAVMF gave up on every boot option; "grub>": grub's
	// config failed; a panic reboots (panic=-1), which ends QEMU.
	stop := []string{want, "Shell>", "grub>", "Kernel panic"}
	r := runVM(t, lab, vmOptions{QEMU: "qemu-system-aarch64", Timeout: 10 * time.Minute, Stop: stop}, aavmfQEMU(t, arm64MAC)...)
	logs := srv.logs.String()
	// The guest powers off right after the marker, often before runVM's
	// poll sees it (Stopped is then ""): look at the whole console.
	i := strings.Index(r.Serial, grubMarker)
	if i < 0 || !strings.Contains(r.Serial[i:], want) {
		t.Fatalf("want %q and then %q on the serial console (stopped at %q, qemu: %v)\nserial:\n%s\nserver:\n%s", grubMarker, want, r.Stopped, r.Err, tail(r.Serial, 4000), tail(logs, 6000))
	}
	t.Logf("ARM64 UEFI PXE (%s) to the Linux marker: %v", strings.Join(loaders, ", "), r.Elapsed)
	// The marker comes from the initrd's /init, so the initrd arrived
	// whole. Its transfer is logged when its session ends: on grub's
	// final ACK, or, if that ACK was lost as grub hands over to the
	// kernel, once the server's retransmissions of the last block run
	// out (tftp.DefaultRetries at up to tftp.DefaultMaxRTO: under a
	// minute), as "ok-unconfirmed" (docs/protocols.md §1.5), possibly
	// after the guest has gone. Wait for the line, bounded (seen once
	// in CI, under -race with QEMU's TCG on both cores).
	got := transfers(logs)
	for deadline := time.Now().Add(60 * time.Second); !slices.ContainsFunc(got, isInitrdTransfer) && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		got = transfers(srv.logs.String())
	}
	for i, g := range got {
		if g == "/initrd.img ok-unconfirmed" {
			t.Logf("grub's final ACK of the initrd never came (the kernel ran from it: the marker): counted as ok")
			got[i] = "/initrd.img ok"
		}
	}
	requireInOrder(t, got, append(loaders, "/grub/grub.cfg ok", "/vmlinuz ok", "/initrd.img ok")...)
	m := metricsOf(t, lab)
	if !strings.Contains(m, `mtftpd_dhcp_replies_by_arch_total{arch="uefi-arm64",reply="offer"} `) {
		t.Fatalf("no DHCP offer to an ARM64 UEFI client in /metrics:\n%s", grepLines(m, "mtftpd_dhcp_replies_by_arch_total"))
	}
}

// isInitrdTransfer reports whether a transfers() entry is the initrd's,
// whatever its outcome.
func isInitrdTransfer(e string) bool { return strings.HasPrefix(e, "/initrd.img ") }

// TestARM64UEFIPXE: an ARM64 UEFI machine (QEMU virt, AAVMF, TCG) boots
// by PXE from mtftpd to Linux: DHCP (option 93 = 11) → Debian's signed
// grubnetaa64.efi over TFTP → grub/grub.cfg over TFTP, rendered by
// mtftpd's templates for this machine (it prints the machine's MAC and
// arch 11 as mtftpd's lease recorded them) → the arm64 kernel and a
// busybox initrd over TFTP, whose /init prints the marker with the MAC
// grub put on the kernel command line. About 30 s of QEMU.
func TestARM64UEFIPXE(t *testing.T) {
	bootARM64(t, false)
}

// TestARM64UEFIPXEShim: the same boot through Debian's signed shim, the
// chain a distribution's network install uses: shimaa64.efi fetches
// grubaa64.efi from mtftpd by itself (through the firmware's PXE TFTP
// client), and grub goes on as above. Secure Boot is off (AAVMF's
// default variables): shim runs grub unverified.
//
// A second ARM64 boot: make e2e-slow.
func TestARM64UEFIPXEShim(t *testing.T) {
	requireSlow(t)
	bootARM64(t, true)
}
