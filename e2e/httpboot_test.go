package e2e

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// httpBootMAC is the UEFI HTTP Boot machine's NIC.
const httpBootMAC = "52:54:00:e2:e0:03"

// ovmfHTTPBootQEMU boots OVMF with only its UEFI HTTP Boot over IPv4 left
// as a network boot option: the fw_cfg switches turn off PXE over IPv4 and
// IPv6 and HTTP Boot over IPv6 (docs/protocols.md §9.8, "In the lab"), so
// the firmware cannot fall back to TFTP.
func ovmfHTTPBootQEMU(t *testing.T, mac string) []string {
	t.Helper()
	code := "/usr/share/OVMF/OVMF_CODE_4M.fd"
	requireFiles(t, code)
	fresh := freshVars(t, "/usr/share/OVMF/OVMF_VARS_4M.fd")
	return []string{"-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + fresh,
		"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
		"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
		"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no",
		"-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac + ",romfile="}
}

// httpBootStop ends a run at the kickstart marker, or early when the
// firmware gives up (its shell, or iPXE failing).
var httpBootStop = append([]string{"Shell>", "Boot Failed"}, defaultStop...)

// metricsOf reads the server's /metrics from inside the lab.
func metricsOf(t *testing.T, lab *netlab.Lab) string {
	t.Helper()
	out, err := lab.Run(context.Background(), "srv", "curl", "-sf", httpBase+"/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v: %s", err, out)
	}
	return out
}

// requireHTTPBootAnswered fails unless the server sent a reply of kind
// ("offer", "proxy_offer") to an HTTPClient.
func requireHTTPBootAnswered(t *testing.T, metrics, kind string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^mtftpd_dhcp_replies_by_arch_total\{arch="http",reply="` + kind + `"\} ([1-9][0-9]*)$`)
	if !re.MatchString(metrics) {
		t.Fatalf("no DHCP %s to an HTTPClient in /metrics:\n%s", kind, grepLines(metrics, "mtftpd_dhcp_replies_by_arch_total"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// requireNoTFTP fails when the server saw any TFTP request: no transfer or
// refusal in its log, and every TFTP request counter of /metrics at 0.
func requireNoTFTP(t *testing.T, metrics, logs string) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"message":"transfer"`) || strings.Contains(line, `"message":"tftp: `) {
			t.Fatalf("a TFTP request reached the server:\n%s", line)
		}
	}
	found := 0
	re := regexp.MustCompile(`(?m)^mtftpd_tftp_(rrq|wrq|not_found|denied|bad_request|session_limited|rate_limited|multicast)_total ([0-9.e+]+)$`)
	for _, m := range re.FindAllStringSubmatch(metrics, -1) {
		found++
		if v, err := strconv.ParseFloat(m[2], 64); err != nil || v != 0 {
			t.Fatalf("TFTP counter %s = %s, want 0", m[1], m[2])
		}
	}
	if found != 8 {
		t.Fatalf("found %d of the 8 TFTP request counters in /metrics:\n%s", found, grepLines(metrics, "mtftpd_tftp_"))
	}
}

// TestUEFIHTTPBoot: OVMF's UEFI HTTP Boot (DHCP vendor class
// "HTTPClient:Arch:00016:…", no PXE) is handed a URL by mtftpd's DHCP
// server, fetches ipxe.efi from the mirror by HTTP, and iPXE boots the
// kernel and initrd by HTTP to the kickstart marker: not one TFTP request
// from DHCP to the kickstart.
func TestUEFIHTTPBoot(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root := bootFiles(t, httpBase)
	srv := startMtftpd(t, lab, "srv", serverConfig(root, `
[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"

# UEFI HTTP Boot, x64: a URL, not a TFTP name (the built-in rules do the
# same; written out as examples/uefi.toml does).
[[dhcp.boot]]
name = "ipxe-script"
ipxe = true
file = "{{.HTTP}}/boot.ipxe?mac={{.MAC}}"

[[dhcp.boot]]
name = "http-boot-x64"
http_client = true
arch = [16]
file = "{{.HTTP}}/ipxe.efi"
`), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runVM(t, lab, vmOptions{Timeout: 5 * time.Minute, Stop: httpBootStop}, ovmfHTTPBootQEMU(t, httpBootMAC)...)
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	t.Logf("HTTP Boot to the kickstart marker: %v", r.Elapsed)
	// EDK2's HttpBootDxe prints this when it starts (HttpBootImpl.c).
	if !strings.Contains(r.Serial, "Start HTTP Boot over IPv4") {
		t.Fatalf("the firmware did not boot by UEFI HTTP Boot:\n%s", tail(r.Serial, 4000))
	}
	requireInOrder(t, transfers(logs), "http /ipxe.efi", "http /boot.ipxe", "http /vmlinuz", "http /initrd.img", "http /ks.cfg")
	m := metricsOf(t, lab)
	requireHTTPBootAnswered(t, m, "offer")
	requireNoTFTP(t, m, logs)
}

// TestUEFIHTTPBootProxy: the same boot with addresses from another DHCP
// server (dnsmasq, no boot options) and mtftpd in ProxyDHCP mode: EDK2
// takes the address from dnsmasq's offer and the URL from mtftpd's proxy
// offer (yiaddr 0, option 60 HTTPClient, docs/protocols.md §9.8). No TFTP.
//
// A slow run (about 2 min of QEMU under TCG): make e2e-slow.
func TestUEFIHTTPBootProxy(t *testing.T) {
	requireSlow(t)
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root := bootFiles(t, httpBase)
	dlog := startOtherDHCP(t, lab)
	srv := startMtftpd(t, lab, "srv", serverConfig(root, `
[dhcp]
mode = "proxy"
# no [[dhcp.boot]]: the built-in rules (HTTPClient x64 → {{.HTTP}}/ipxe.efi,
# iPXE → {{.HTTP}}/boot.ipxe)
`), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runVM(t, lab, vmOptions{Timeout: 5 * time.Minute, Stop: httpBootStop}, ovmfHTTPBootQEMU(t, httpBootMAC)...)
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	t.Logf("HTTP Boot (ProxyDHCP) to the kickstart marker: %v", r.Elapsed)
	requireInOrder(t, transfers(logs), "http /ipxe.efi", "http /boot.ipxe", "http /vmlinuz", "http /initrd.img", "http /ks.cfg")
	if !strings.Contains(dlog.String(), "DHCPACK(br0)") {
		t.Fatalf("dnsmasq handed out no address:\n%s", dlog.String())
	}
	m := metricsOf(t, lab)
	requireHTTPBootAnswered(t, m, "proxy_offer")
	requireNoTFTP(t, m, logs)
}
