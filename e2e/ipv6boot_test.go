package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// The IPv6 boot segment: the documentation prefix (RFC 3849), the
// server's address in it, the URL base of its mirror.
const (
	serverAddr6 = "2001:db8:1::1"
	httpBase6   = "http://[" + serverAddr6 + "]:8080"
	ipv6MAC     = "52:54:00:e2:e0:06"
)

// initScript6 is initScript for the IPv6 segment: no DHCPv4 there, and
// Debian's busybox has no DHCPv6 client, so it takes the address iPXE
// leased from mtftpd's DHCPv6 (mtftpd.ip6= on the command line, set by
// the iPXE script from ${ip6}) and fetches the kickstart from the
// mirror's IPv6 address.
const initScript6 = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
ip link set lo up
i=0
while ! ip link show eth0 >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip link set eth0 up
ip6=$(sed -n 's/.*mtftpd\.ip6=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "MTFTPD-E2E: ip6 $ip6"
ip -6 addr add "$ip6/64" dev eth0
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

// bootScript6 is the iPXE script of the IPv6 boot: everything by HTTP
// from the mirror's IPv6 address, the DHCPv6 address handed on.
var bootScript6 = fmt.Sprintf(`#!ipxe
echo mtftpd e2e iPXE script for ${net0/mac} at ${ip6}
kernel %[1]s/vmlinuz initrd=initrd.img console=ttyS0 quiet panic=1 mtftpd.ip6=${ip6} inst.ks=%[1]s/ks.cfg
initrd %[1]s/initrd.img
boot
`, httpBase6)

// TestUEFIIPv6PXE: OVMF's UEFI PXE over IPv6 only (PXE over IPv4 off)
// on a segment where mtftpd is the only server and serves no DHCPv4:
// its router advertisement says M=1 with the prefix on-link, its DHCPv6
// hands the firmware an address and tftp://[2001:db8:1::1]/ipxe.efi,
// TFTP over IPv6 delivers it, iPXE's own DHCPv6 Solicit (user class
// iPXE) gets the script's http://[…] URL, and kernel, initrd and
// kickstart come by HTTP over IPv6 to the marker.
func TestUEFIIPv6PXE(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Taps: 1, IPv6: true})
	if out, err := lab.Run(context.Background(), "srv", "ip", "-6", "addr", "add", serverAddr6+"/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatalf("server address: %v %s", err, out)
	}
	root := bootFiles(t, httpBase6)
	_, release := kernelPath(t)
	buildBusyboxInitrd(t, release, filepath.Join(root, "initrd.img"), initScript6, nil,
		"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
		"drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
		"drivers/virtio/virtio_pci.ko", "net/core/failover.ko", "drivers/net/net_failover.ko",
		"drivers/net/virtio_net.ko")
	if err := os.WriteFile(filepath.Join(root, "boot.ipxe"), []byte(bootScript6), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startMtftpd(t, lab, "srv", fmt.Sprintf(`
[tftp]
listen = "[::]:69"
root = %q

[http]
listen = "[::]:8080"

[dhcp]
mode = "off"
router_advert = "auto"

[dhcp6]
enabled = true
interfaces = ["eth0"]
prefix = "2001:db8:1::/64"
range = "2001:db8:1::100-2001:db8:1::1ff"
# no [[dhcp.boot]]: the built-in rules (UEFI x64 → ipxe.efi, as
# tftp://[2001:db8:1::1]/ipxe.efi; iPXE → {{.HTTP}}/boot.ipxe)
`, root), "tftp server listening", "http mirror listening", "dhcp6 server listening")

	code := "/usr/share/OVMF/OVMF_CODE_4M.fd"
	requireFiles(t, code)
	fresh := freshVars(t, "/usr/share/OVMF/OVMF_VARS_4M.fd")
	r := runVM(t, lab, vmOptions{Timeout: 5 * time.Minute, Stop: httpBootStop}, "-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+fresh,
		"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
		"-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+ipv6MAC+",romfile=")
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	t.Logf("UEFI PXE over IPv6 to the kickstart marker: %v", r.Elapsed)
	t.Logf("DHCPv6 answers:\n%s", grepLines(logs, `"dhcp6: answer"`))
	// EDK2's UefiPxeBcDxe prints this when it starts (PxeBcBoot.c).
	if !strings.Contains(r.Serial, "Start PXE over IPv6") {
		t.Fatalf("the firmware did not boot by PXE over IPv6:\n%s", tail(r.Serial, 4000))
	}
	requireInOrder(t, transfers(logs), "ipxe.efi ok", "http /boot.ipxe", "http /vmlinuz", "http /initrd.img", "http /ks.cfg")
	if !strings.Contains(r.Serial, "boot.ipxe?mac="+ipv6MAC) {
		t.Errorf("iPXE's script URL does not name its MAC (from its EUI-64 link-local address):\n%s", tail(r.Serial, 3000))
	}
	m := regexp.MustCompile(`MTFTPD-E2E: ip6 (2001:db8:1::1[0-9a-f]{2})\b`).FindStringSubmatch(r.Serial)
	if m == nil {
		t.Fatalf("the kernel did not get iPXE's DHCPv6 address from the pool:\n%s", tail(r.Serial, 3000))
	}
	if !strings.Contains(r.Serial, "mtftpd e2e iPXE script for "+ipv6MAC+" at "+m[1]) {
		t.Fatalf("the iPXE script did not run with the DHCPv6 address:\n%s", tail(r.Serial, 3000))
	}
	if m := metricsOf(t, lab); !regexp.MustCompile(`(?m)^mtftpd_dhcp6_boot_url_total [1-9]`).MatchString(m) {
		t.Errorf("/metrics counts no DHCPv6 boot URL:\n%s", grepLines(m, "mtftpd_dhcp6_"))
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"message":"dhcp server listening"`) {
			t.Fatalf("a DHCPv4 server ran on the IPv6-only segment: %s", l)
		}
	}
}
