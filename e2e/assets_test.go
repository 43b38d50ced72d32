package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

// Marker is what the test initrd prints on the serial console once it has
// fetched its kickstart over HTTP: the proof that the whole chain worked.
const Marker = "MTFTPD-E2E-KICKSTART-OK"

// kernelPath finds a Debian kernel (package linux-image-amd64).
func kernelPath(t *testing.T) (vmlinuz, release string) {
	t.Helper()
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(m)
	if len(m) == 0 {
		testutil.Unavailable(t, "no kernel in /boot (linux-image-amd64)")
	}
	v := m[len(m)-1]
	return v, strings.TrimPrefix(filepath.Base(v), "vmlinuz-")
}

// initScript runs as PID 1 in the test initrd: it brings up the e1000 NIC,
// gets a lease from mtftpd's DHCP with busybox udhcpc, fetches the
// kickstart named by inst.ks= on the kernel command line, prints the
// marker and its first line, and powers off.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
ip link set lo up
i=0
while ! ip link show eth0 >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -T 2 -s /udhcpc.sh || echo "MTFTPD-E2E: no DHCP lease"
ks=$(sed -n 's/.*inst\.ks=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "MTFTPD-E2E: fetching $ks"
if timeout 30 wget -q -O /ks.cfg "$ks"; then
  echo "` + Marker + ` $(head -n1 /ks.cfg)"
else
  echo "MTFTPD-E2E: kickstart fetch failed"
fi
sync
poweroff -f
`

const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
  echo "MTFTPD-E2E: lease $ip"
  ;;
esac
exit 0
`

// buildInitrd writes a newc cpio archive with busybox (and the shared
// libraries it needs), the NIC modules and the kickstart init script.
func buildInitrd(t *testing.T, release, out string) {
	t.Helper()
	// NIC drivers in load order (dependencies first): e1000 for the BIOS
	// machine, virtio-net for UEFI.
	buildBusyboxInitrd(t, release, out, initScript, map[string]string{"udhcpc.sh": udhcpcScript},
		"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
		"drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
		"drivers/virtio/virtio_pci.ko", "net/core/failover.ko", "drivers/net/net_failover.ko",
		"drivers/net/virtio_net.ko", "drivers/net/ethernet/intel/e1000/e1000.ko")
}

// buildBusyboxInitrd writes a newc cpio archive with busybox (and the
// shared libraries it needs), init as /init, the scripts (name → text,
// executable) and the kernel modules (paths under the release's kernel/
// directory) as lib/modules/NN-name.ko, numbered in the order given so
// that an init loading /lib/modules/*.ko in name order loads
// dependencies first.
func buildBusyboxInitrd(t *testing.T, release, out, init string, scripts map[string]string, modules ...string) {
	t.Helper()
	requireTools(t, "busybox")
	bb, _ := exec.LookPath("busybox")
	buildInitrdWith(t, bb, release, out, init, scripts, modules...)
}

// buildInitrdWith is buildBusyboxInitrd with the busybox binary at bb
// (another architecture's static busybox has no libraries to bring).
func buildInitrdWith(t *testing.T, bb, release, out, init string, scripts map[string]string, modules ...string) {
	t.Helper()
	stage := t.TempDir()
	mk := func(p string, data []byte, mode os.FileMode) {
		full := filepath.Join(stage, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	copyIn := func(src, dst string, mode os.FileMode) {
		b, err := os.ReadFile(src)
		if err != nil {
			testutil.Unavailable(t, "initrd: %v", err)
		}
		mk(dst, b, mode)
	}
	copyIn(bb, "bin/busybox", 0o755)
	// Debian's busybox is dynamically linked: bring its libraries.
	ldd, err := exec.Command("ldd", bb).Output()
	if err == nil {
		re := regexp.MustCompile(`(/[^ ]+\.so[^ ]*)`)
		for _, m := range re.FindAllString(string(ldd), -1) {
			copyIn(m, strings.TrimPrefix(m, "/"), 0o755)
		}
	}
	for i, m := range modules {
		src := fmt.Sprintf("/lib/modules/%s/kernel/%s", release, m)
		copyIn(src, fmt.Sprintf("lib/modules/%02d-%s", i, filepath.Base(m)), 0o644)
	}
	mk("init", []byte(init), 0o755)
	for name, text := range scripts {
		mk(name, []byte(text), 0o755)
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "etc"} {
		os.MkdirAll(filepath.Join(stage, d), 0o755)
	}
	var list bytes.Buffer
	filepath.Walk(stage, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != stage {
			rel, _ := filepath.Rel(stage, p)
			list.WriteString(rel + "\n")
		}
		return nil
	})
	cmd := exec.Command("cpio", "-o", "-H", "newc", "--quiet")
	cmd.Dir = stage
	cmd.Stdin = &list
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cpio: %v %s", err, stderr.String())
	}
}
