package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// The signed chain of a Secure Boot network boot (README, "Secure Boot";
// docs/protocols.md §9.12), from Debian's packages: shim signed by
// Microsoft's UEFI CA (shim-signed), GRUB's netboot image signed by
// Debian (grub-efi-amd64-signed) and Debian's signed kernel
// (linux-image-amd64, kernelPath).
const (
	signedShim = "/usr/lib/shim/shimx64.efi.signed"
	signedGrub = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
	// OVMF with Secure Boot: the SMM build, and variables with
	// Microsoft's keys enrolled and Secure Boot on (Debian's ovmf).
	secureCode = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
	secureVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// secureBootMAC is the Secure Boot machine's NIC.
const secureBootMAC = "52:54:00:e2:e0:05"

// secureBootFiles is bootFiles plus the signed chain, named as the README
// says (shim loads grubx64.efi from its own directory), and the template
// directory with examples/secureboot's per-host grub/grub.cfg.
func secureBootFiles(t *testing.T, httpBase string) (root, tmpl string) {
	t.Helper()
	requireFiles(t, signedShim, signedGrub)
	root = bootFiles(t, httpBase)
	copyFile(t, signedShim, filepath.Join(root, "shimx64.efi"))
	copyFile(t, signedGrub, filepath.Join(root, "grubx64.efi"))
	tmpl = t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmpl, "grub"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "../examples/secureboot/templates/grub/grub.cfg", filepath.Join(tmpl, "grub", "grub.cfg"))
	return root, tmpl
}

// secureBootQEMU is OVMF with Secure Boot on: the SMM build of the code
// needs SMM in the machine and its flash marked secure (only SMM may
// write the variables, so the OS cannot turn Secure Boot off). extra
// goes before the NIC (fw_cfg switches).
func secureBootQEMU(t *testing.T, mac string, extra ...string) []string {
	t.Helper()
	requireFiles(t, secureCode)
	vars := freshVars(t, secureVars)
	args := []string{"-machine", "q35,smm=on",
		"-global", "driver=cfi.pflash01,property=secure,value=on",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + secureCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars}
	args = append(args, extra...)
	return append(args,
		"-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+mac+",romfile=")
}

// secureBootConfig is examples/secureboot.toml's PXE rule in the lab, and
// the HTTP Boot rule the example leaves out (TestSecureBootHTTPStopsAtGRUB).
func secureBootConfig(root, tmpl string) string {
	return serverConfig(root, `
[templates]
dir = "`+tmpl+`"

[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"

[[dhcp.boot]]
name = "http-boot-x64-secure"
http_client = true
arch = [16]
file = "{{.HTTP}}/shimx64.efi"

[[dhcp.boot]]
name = "uefi-x64-secure"
arch = [7, 9]
file = "shimx64.efi"
`)
}

// httpBootOnly and pxeV4Only leave one network boot option in OVMF
// (docs/protocols.md §9.8, "In the lab").
var (
	httpBootOnly = []string{
		"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
		"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
		"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no"}
	pxeV4Only = []string{
		"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
		"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no"}
)

// secureBootStop ends a run at the marker, or early when the firmware
// refuses an image or gives up, or GRUB falls to its prompt.
var secureBootStop = append([]string{"Access Denied", "Security Violation", "Shell>", "grub>", "grub rescue>"}, defaultStop...)

// TestSecureBootPXE: OVMF with Secure Boot on and Microsoft's keys PXE
// boots shimx64.efi over TFTP; shim loads grubx64.efi (Debian's signed
// netboot GRUB) from the same TFTP directory; GRUB reads its per-host
// grub/grub.cfg, rendered from a template for this machine, and boots
// Debian's signed kernel, whose initrd reaches the kickstart marker.
func TestSecureBootPXE(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root, tmpl := secureBootFiles(t, httpBase)
	srv := startMtftpd(t, lab, "srv", secureBootConfig(root, tmpl), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runVM(t, lab, vmOptions{Timeout: 8 * time.Minute, Stop: secureBootStop}, secureBootQEMU(t, secureBootMAC)...)
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	t.Logf("Secure Boot PXE to the kickstart marker: %v", r.Elapsed)
	requireInOrder(t, transfers(logs), "shimx64.efi ok", "grubx64.efi ok", "/grub/grub.cfg ok", "/vmlinuz ok", "/initrd.img ok", "http /ks.cfg")
	requireSecureChain(t, r, "tftp")
}

// requireSecureChain checks the serial console of a signed-chain boot:
// GRUB ran the config rendered for this machine over proto, and the
// kernel saw Secure Boot on (its own line, so a firmware that quietly
// booted with Secure Boot off fails here).
func requireSecureChain(t *testing.T, r qemuResult, proto string) {
	t.Helper()
	if !strings.Contains(r.Serial, "mtftpd: grub.cfg for "+secureBootMAC) || !strings.Contains(r.Serial, "over "+proto) {
		t.Fatalf("GRUB did not run the per-host grub.cfg (over %s):\n%s", proto, tail(r.Serial, 4000))
	}
	if !strings.Contains(r.Serial, "Secure boot enabled") {
		t.Fatalf("the kernel did not report Secure Boot on:\n%s", tail(r.Serial, 4000))
	}
}

// TestSecureBootHTTPStopsAtGRUB: the chain by UEFI HTTP Boot (PXE
// switched off in the firmware). OVMF fetches shimx64.efi by the URL in
// mtftpd's offer and shim fetches grubx64.efi from the same URL directory;
// both pass the firmware's and shim's signature checks and GRUB starts,
// with no TFTP. There the chain ends: Debian 12's signed netboot GRUB
// knows it was booted from (http,192.0.2.1) but carries no http module
// and may load none under Secure Boot, so it reads no config and stops at
// its prompt (docs/protocols.md §9.12). The test pins that: should a
// Debian GRUB read its config over HTTP, it fails and asks to expect the
// marker instead.
func TestSecureBootHTTPStopsAtGRUB(t *testing.T) {
	requireSlow(t) // a limit of Debian 12's GRUB, not of mtftpd: make e2e-slow
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root, tmpl := secureBootFiles(t, httpBase)
	srv := startMtftpd(t, lab, "srv", secureBootConfig(root, tmpl), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runVM(t, lab, vmOptions{Timeout: 5 * time.Minute, Stop: secureBootStop}, secureBootQEMU(t, secureBootMAC, httpBootOnly...)...)
	logs := srv.logs.String()
	t.Logf("Secure Boot HTTP Boot to GRUB's prompt: %v", r.Elapsed)
	if strings.Contains(r.Serial, "mtftpd: grub.cfg for") || strings.Contains(r.Serial, Marker) {
		t.Fatalf("GRUB read its config over HTTP: the signed GRUB can do HTTP now; make this test expect the kickstart marker (and update README and docs/protocols.md §9.12):\n%s", tail(r.Serial, 4000))
	}
	if r.Stopped != "grub>" || !strings.Contains(r.Serial, "GNU GRUB") {
		t.Fatalf("GRUB did not start and stop at its prompt (stopped at %q):\n%s", r.Stopped, tail(r.Serial, 4000))
	}
	if !strings.Contains(r.Serial, "Start HTTP Boot over IPv4") {
		t.Fatalf("the firmware did not boot by UEFI HTTP Boot:\n%s", tail(r.Serial, 4000))
	}
	// shim keeps the URL up to its last slash and appends its loader's
	// name with a leading slash: //grubx64.efi.
	requireInOrder(t, transfers(logs), "http /shimx64.efi", "http //grubx64.efi")
	m := metricsOf(t, lab)
	requireHTTPBootAnswered(t, m, "offer")
	requireNoTFTP(t, m, logs)
}

// TestSecureBootRefusesUnsigned: with Secure Boot on, OVMF downloads the
// default UEFI boot file, iPXE's unsigned ipxe.efi, over TFTP and refuses
// to start it: why a Secure Boot room needs the signed chain.
func TestSecureBootRefusesUnsigned(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root := bootFiles(t, httpBase)
	srv := startMtftpd(t, lab, "srv", serverConfig(root, `
[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"
# no [[dhcp.boot]]: the built-in rules (UEFI x64 → ipxe.efi)
`), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runVM(t, lab, vmOptions{Timeout: 5 * time.Minute, Stop: []string{"Access Denied", Marker}}, secureBootQEMU(t, secureBootMAC, pxeV4Only...)...)
	logs := srv.logs.String()
	t.Logf("Secure Boot refusal of ipxe.efi: %v", r.Elapsed)
	requireInOrder(t, transfers(logs), "ipxe.efi ok")
	// BdsDxe names the boot option and LoadImage's status: the image came
	// from a NIC (a MAC node in its device path), so the firmware applies
	// its removable-media policy, deny (docs/protocols.md §9.12).
	refused := regexp.MustCompile(`failed to load Boot[0-9A-F]{4} "UEFI PXEv4[^"]*"[^\n]*: Access Denied`)
	if r.Stopped != "Access Denied" || !refused.MatchString(r.Serial) {
		t.Fatalf("the firmware did not refuse the unsigned ipxe.efi (stopped at %q):\n%s", r.Stopped, tail(r.Serial, 4000))
	}
	t.Log(refused.FindString(r.Serial))
	// iPXE's first request would be its script; the firmware may go on to
	// its HTTP Boot option (and fetch ipxe.efi again) before QEMU stops.
	for _, g := range transfers(logs) {
		if g == "http /boot.ipxe" || strings.Contains(r.Serial, Marker) {
			t.Fatalf("iPXE ran under Secure Boot (%s)", g)
		}
	}
}
