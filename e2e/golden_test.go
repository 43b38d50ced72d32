package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

// LocalBootMarker is what the golden disk's initrd prints, followed by the
// disk's serial (the machine's name) and the loader that booted it:
// "MTFTPD-E2E-LOCAL-BOOT pc01 loader=extlinux". Seeing it proves the
// machine booted from its own disk.
const LocalBootMarker = "MTFTPD-E2E-LOCAL-BOOT"

// localBootLine is the start of the line a machine named name prints when
// it booted its disk (any loader).
func localBootLine(name string) string { return LocalBootMarker + " " + name + " loader=" }

// localInit is /init of the golden disk's initrd: it loads the virtio
// block driver, reads the disk's serial (QEMU's serial= on
// virtio-blk-pci, which the tests set to the machine's name), prints the
// marker and powers off.
const localInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
i=0
while [ ! -e /sys/block/vda/serial ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
name=$(cat /sys/block/vda/serial 2>/dev/null)
loader=$(sed -n 's/.*mtftpd\.loader=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "` + LocalBootMarker + ` ${name:-no-vda} loader=${loader:-unknown}"
sync
poweroff -f
`

// Golden disk layout, in 512-byte sectors. 128 MiB in all: an ESP of
// 32 MiB (FAT16, which UEFI reads like FAT32) at 1 MiB and the ext4 root
// after it. Only the loaders, the kernel and the initrd are data; the
// rest stays holes.
const (
	goldenSize     = 128 << 20
	goldenESPStart = 2048
	goldenESPSize  = 65536
	goldenRootStrt = goldenESPStart + goldenESPSize
	goldenRootSize = goldenSize/512 - goldenRootStrt
	// goldenRootUUID is fixed so that GRUB can find the root by UUID on any
	// disk the image is deployed to, and the build is repeatable.
	goldenRootUUID = "6d746674-7064-4532-a500-000000000001"
)

// goldenTools are the commands buildGoldenDisk runs (scripts/test-deps.sh:
// fdisk, dosfstools, mtools, e2fsprogs, extlinux, grub-efi-amd64-bin,
// mount).
var goldenTools = []string{"sfdisk", "mkfs.vfat", "mmd", "mcopy", "mkfs.ext4", "extlinux", "grub-mkstandalone", "losetup", "mount", "umount", "cpio", "busybox"}

// syslinuxMBR is syslinux's MBR boot code (package syslinux-common): it
// boots the partition with the bootable flag, where extlinux sits.
const syslinuxMBR = "/usr/lib/syslinux/mbr/mbr.bin"

// buildGoldenDisk writes a bootable raw disk to out from Debian packages
// only: an MBR (syslinux's mbr.bin) and a dos partition table with
// partition 1 an ESP holding \EFI\BOOT\BOOTX64.EFI (a standalone GRUB
// with its config embedded) and partition 2, bootable, an ext4 root with
// extlinux, /boot/vmlinuz (Debian's kernel) and /boot/initrd.img (a
// busybox initrd that prints LocalBootMarker and powers off). Both
// loaders boot the same kernel and initrd from the ext4 partition, with
// mtftpd.loader=extlinux or grub on the command line.
//
// GRUB rather than systemd-boot on the ESP: systemd-boot loads kernels
// only from FAT partitions, so the kernel would have to be copied to the
// ESP, while GRUB reads the ext4 root that extlinux boots from.
//
// It needs root (a loop mount for extlinux, which installs only into a
// mounted file system); the mount is removed before it returns.
func buildGoldenDisk(t *testing.T, out string) {
	t.Helper()
	requireRoot(t)
	requireTools(t, goldenTools...)
	requireFiles(t, syslinuxMBR, "/usr/lib/grub/x86_64-efi/linux.mod")
	vmlinuz, release := kernelPath(t)
	work := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		// mke2fs and mkfs.vfat stamp times and random ids: pin what they
		// allow pinning.
		cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000", "SOURCE_DATE_EPOCH=1700000000", "MTOOLS_SKIP_CHECK=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
		}
	}

	// The root file system's contents.
	stage := filepath.Join(work, "root")
	must(t, os.MkdirAll(filepath.Join(stage, "boot/syslinux"), 0o755))
	copyFile(t, vmlinuz, filepath.Join(stage, "boot/vmlinuz"))
	buildBusyboxInitrd(t, release, filepath.Join(stage, "boot/initrd.img"), localInit, nil,
		moduleClosure(t, release, "virtio_blk", "virtio_pci")...)
	// extlinux.conf: SERIAL first so that everything after it reaches the
	// serial console too.
	must(t, os.WriteFile(filepath.Join(stage, "boot/syslinux/extlinux.conf"), []byte(`SERIAL 0 115200
DEFAULT local
TIMEOUT 1
LABEL local
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND console=ttyS0 quiet panic=1 mtftpd.loader=extlinux
`), 0o644))
	root := filepath.Join(work, "root.img")
	// Block maps, not extents (and so not 64bit, which needs extents):
	// Debian 12's extlinux (6.04) fails to read the kernel from an ext4
	// with extents ("Loading /boot/vmlinuz failed: I/O error" under
	// SeaBIOS, TestGoldenDiskBoots); without 64bit alone, or without
	// flex_bg or metadata_csum, it still fails.
	run("mkfs.ext4", "-q", "-F", "-O", "^64bit,^extent", "-L", "golden", "-U", goldenRootUUID,
		"-E", "hash_seed="+goldenRootUUID+",root_owner=0:0", "-d", stage, root, fmt.Sprintf("%dk", goldenRootSize/2))
	installExtlinux(t, root, work, goldenRootStrt)

	// The ESP: a standalone GRUB (its modules in a memdisk, its config
	// embedded) as the removable-media path every UEFI firmware tries.
	grubCfg := filepath.Join(work, "grub.cfg")
	must(t, os.WriteFile(grubCfg, []byte(`serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
search --no-floppy --fs-uuid --set=root `+goldenRootUUID+`
echo "golden: grub, root=$root"
linux /boot/vmlinuz console=ttyS0 quiet panic=1 mtftpd.loader=grub
initrd /boot/initrd.img
boot
`), 0o644))
	efi := filepath.Join(work, "BOOTX64.EFI")
	run("grub-mkstandalone", "-O", "x86_64-efi", "-o", efi, "--locales=", "--fonts=", "--themes=",
		"--install-modules=normal linux boot part_msdos ext2 search search_fs_uuid serial terminal echo configfile test",
		"--modules=part_msdos ext2 serial", "boot/grub/grub.cfg="+grubCfg)
	esp := filepath.Join(work, "esp.img")
	run("mkfs.vfat", "-n", "GOLDEN-ESP", "-i", "6d746674", "-C", esp, fmt.Sprint(goldenESPSize/2))
	run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT")
	run("mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI")

	// The disk: sparse, partitioned, the two file systems copied in
	// without their zero blocks.
	f, err := os.Create(out)
	must(t, err)
	must(t, f.Truncate(goldenSize))
	must(t, f.Close())
	sf := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", out)
	sf.Stdin = strings.NewReader(fmt.Sprintf(`label: dos
label-id: 0x6d746674
unit: sectors
start=%d, size=%d, type=ef
start=%d, size=%d, type=83, bootable
`, goldenESPStart, goldenESPSize, goldenRootStrt, goldenRootSize))
	if b, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, b)
	}
	writeSparseAt(t, out, esp, goldenESPStart*512)
	writeSparseAt(t, out, root, goldenRootStrt*512)

	// The MBR boot code: 440 bytes, up to the disk signature.
	mbr, err := os.ReadFile(syslinuxMBR)
	must(t, err)
	if len(mbr) > 440 {
		t.Fatalf("%s is %d bytes, more than the 440 of MBR boot code", syslinuxMBR, len(mbr))
	}
	f, err = os.OpenFile(out, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(mbr, 0)
	must(t, err)
	must(t, f.Close())
}

// installExtlinux mounts the ext4 file system in the file fs (a loop
// mount: extlinux installs only into a mounted file system), runs
// extlinux --install on /boot/syslinux and unmounts it; the mount is
// undone in t.Cleanup too should the test stop halfway.
//
// extlinux addresses ldlinux.sys in sectors from the start of the file
// system and adds the boot sector's "hidden sectors" field (bsHidden, the
// FAT BPB's dword at 0x1C, which syslinux's boot sector keeps) to reach
// the disk: extlinux fills it from the block device's partition start,
// which is 0 for a file, so it is set here to start, where the partition
// will begin. (Partitions of loop devices, losetup -P, are not available
// on every kernel; this needs no partition scan.)
func installExtlinux(t *testing.T, fs, work string, start uint32) {
	t.Helper()
	mnt := filepath.Join(work, "mnt")
	must(t, os.MkdirAll(mnt, 0o755))
	if b, err := exec.Command("mount", "-t", "ext4", "-o", "loop", fs, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop %s: %v %s", fs, err, b)
	}
	mounted := true
	unmount := func() {
		if mounted {
			mounted = false
			// umount of a loop mount detaches its auto-cleared loop device.
			if b, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", mnt, err, b)
			}
		}
	}
	t.Cleanup(unmount)
	defer unmount()
	if b, err := exec.Command("extlinux", "--install", filepath.Join(mnt, "boot/syslinux")).CombinedOutput(); err != nil {
		t.Fatalf("extlinux --install: %v %s", err, b)
	}
	unmount()
	f, err := os.OpenFile(fs, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	var bs [512]byte
	_, err = f.ReadAt(bs[:], 0)
	must(t, err)
	if bs[510] != 0x55 || bs[511] != 0xAA {
		t.Fatalf("extlinux wrote no boot sector to %s (no 55 AA signature)", fs)
	}
	if h := binary.LittleEndian.Uint32(bs[0x1C:]); h != 0 && h != start {
		t.Fatalf("extlinux set hidden sectors to %d, want 0 (a file) or %d", h, start)
	}
	binary.LittleEndian.PutUint32(bs[0x1C:], start)
	_, err = f.WriteAt(bs[0x1C:0x20], 0x1C)
	must(t, err)
	must(t, f.Close())
}

// writeSparseAt copies src into dst at offset off, skipping 4 KiB blocks
// that are all zero (dst is a fresh sparse file: they are zero already and
// stay holes).
func writeSparseAt(t *testing.T, dst, src string, off int64) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	must(t, err)
	defer out.Close()
	buf := make([]byte, 4096)
	zero := make([]byte, 4096)
	for pos := int64(0); ; {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off+pos); werr != nil {
				t.Fatal(werr)
			}
		}
		pos += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		must(t, err)
	}
	must(t, out.Close())
}

// moduleClosure returns the modules named (by module name, as in
// modules.dep) and everything they depend on, as paths under the
// release's kernel/ directory, dependencies first.
func moduleClosure(t *testing.T, release string, names ...string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("/lib/modules", release, "modules.dep"))
	if err != nil {
		requireFiles(t, filepath.Join("/lib/modules", release, "modules.dep"))
		t.Fatal(err)
	}
	defer f.Close()
	deps := map[string][]string{} // "kernel/…/x.ko" → its dependencies
	byName := map[string]string{} // "x" → "kernel/…/x.ko"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[strings.TrimSuffix(filepath.Base(mod), ".ko")] = mod
	}
	must(t, sc.Err())
	var order []string
	seen := map[string]bool{}
	var visit func(mod string, depth int)
	visit = func(mod string, depth int) {
		if seen[mod] || depth > 32 { // modules.dep is acyclic; bound it anyway
			return
		}
		seen[mod] = true
		for _, d := range deps[mod] {
			visit(d, depth+1)
		}
		order = append(order, strings.TrimPrefix(mod, "kernel/"))
	}
	for _, n := range names {
		mod, ok := byName[n]
		if !ok {
			t.Fatalf("module %s is not in %s's modules.dep (built in?)", n, release)
		}
		visit(mod, 0)
	}
	return order
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	must(t, err)
	must(t, os.WriteFile(dst, b, 0o644))
}

// freshVars copies a UEFI firmware's variable store template into the
// test's directory, so that each boot starts from the shipped variables
// and none writes to the installed file; a missing template fails as
// root (requireFiles).
func freshVars(t *testing.T, template string) string {
	t.Helper()
	requireFiles(t, template)
	vars := filepath.Join(t.TempDir(), filepath.Base(template))
	copyFile(t, template, vars)
	return vars
}

// seabiosArgs is a PC with SeaBIOS (boot order from the devices'
// bootindex).
func seabiosArgs() []string {
	return []string{"-bios", "/usr/share/seabios/bios-256k.bin"}
}

// ovmfArgs is a q35 machine with OVMF and its own copy of the variable
// store (boot order from the devices' bootindex).
func ovmfArgs(t *testing.T) []string {
	t.Helper()
	requireFiles(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")
	vars := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
	copyFile(t, "/usr/share/OVMF/OVMF_VARS_4M.fd", vars)
	return []string{"-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars}
}

// diskArgs attaches a raw disk as virtio-blk with serial (the machine's
// name, which the golden initrd prints) at boot position bootindex.
// snapshot keeps the file unchanged (writes go to a temporary overlay).
// virtio-blk serials are at most 20 bytes (the guest sees no more, the
// virtio spec's VIRTIO_BLK_ID_BYTES): a longer name is a test bug.
func diskArgs(path, serial string, bootindex int, snapshot bool) []string {
	if len(serial) > 20 || strings.ContainsAny(serial, ", ") {
		panic("diskArgs: serial " + serial + " is longer than 20 bytes or has a comma or space")
	}
	drive := "if=none,id=d0,format=raw,file=" + path
	if snapshot {
		drive += ",snapshot=on"
	}
	return []string{"-drive", drive,
		"-device", fmt.Sprintf("virtio-blk-pci,drive=d0,serial=%s,bootindex=%d", serial, bootindex)}
}

// biosNIC is the BIOS machine's NIC on lab tap tap: e1000 with Debian's
// iPXE PXE ROM (biosQEMU), at boot position bootindex.
func biosNIC(tap, mac string, bootindex int) []string {
	return []string{"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", fmt.Sprintf("e1000,netdev=n0,mac=%s,romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom,bootindex=%d", mac, bootindex)}
}

// uefiNIC is the UEFI machine's NIC on lab tap tap: virtio-net without an
// option ROM, so OVMF's own PXE client boots it, at boot position
// bootindex.
func uefiNIC(tap, mac string, bootindex int) []string {
	return []string{"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=%s,romfile=,bootindex=%d", mac, bootindex)}
}

// TestGoldenDiskBoots: the golden disk boots by itself, with no network,
// under SeaBIOS (mbr.bin → extlinux) and under OVMF (\EFI\BOOT\BOOTX64.EFI
// = GRUB), and the initrd names the disk's serial. `mtftpd image create`
// accepts it and qemu-img sees it as raw.
func TestGoldenDiskBoots(t *testing.T) {
	requireSlow(t)
	requireTools(t, "qemu-system-x86_64", "qemu-img")
	disk := filepath.Join(t.TempDir(), "golden.raw")
	start := time.Now()
	buildGoldenDisk(t, disk)
	t.Logf("golden disk built in %v", time.Since(start).Round(time.Millisecond))
	if b, err := exec.Command("qemu-img", "info", disk).CombinedOutput(); err != nil || !strings.Contains(string(b), "file format: raw") {
		t.Fatalf("qemu-img info: %v\n%s", err, b)
	}
	if fi, err := os.Stat(disk); err == nil {
		if n, ok := testutil.AllocatedBytes(fi); ok {
			t.Logf("golden disk: %d MiB, %d KiB allocated", goldenSize>>20, n>>10)
		}
	}
	img := filepath.Join(t.TempDir(), "golden.img")
	if b, err := exec.Command(mtftpdBin, "image", "create", disk, "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("mtftpd image create: %v\n%s", err, b)
	}
	if b, err := exec.Command(mtftpdBin, "image", "verify", img).CombinedOutput(); err != nil {
		t.Fatalf("mtftpd image verify: %v\n%s", err, b)
	}
	for _, fw := range []struct {
		name, loader string
		args         []string
	}{
		{"seabios", "extlinux", seabiosArgs()},
		{"ovmf", "grub", ovmfArgs(t)},
	} {
		t.Run(fw.name, func(t *testing.T) {
			name := "golden-" + fw.name // ≤ 20 bytes: diskArgs
			r := runVM(t, nil, vmOptions{Timeout: 5 * time.Minute, Stop: []string{LocalBootMarker, "Kernel panic", "failed: I/O error", "Boot failed"}},
				append(fw.args, diskArgs(disk, name, 1, true)...)...)
			want := localBootLine(name) + fw.loader
			if !strings.Contains(r.Serial, want) {
				t.Fatalf("no %q on the serial console after %v (qemu: %v):\n%s\n…\n%s", want, r.Elapsed, r.Err, head(r.Serial, 2000), tail(r.Serial, 2000))
			}
			t.Logf("%s: disk boot to marker in %v (TCG)", fw.name, r.Elapsed.Round(100*time.Millisecond))
		})
	}
}

func head(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
