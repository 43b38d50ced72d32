package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

const (
	httpBase = "http://192.0.2.1:8080"
	biosMAC  = "52:54:00:e2:e0:01"
	uefiMAC  = "52:54:00:e2:e0:02"
)

// serverConfig is the one config file of the classic workflow: TFTP for
// the loaders, HTTP for the install tree and kickstart, DHCP pointing
// firmware at them.
func serverConfig(root, dhcpSection string) string {
	return fmt.Sprintf(`
[tftp]
listen = "0.0.0.0:69"
root = %q

[http]
listen = "0.0.0.0:8080"

%s
`, root, dhcpSection)
}

// tftpMode turns on tftp.single_port in a serverConfig document when
// singlePort is set.
func tftpMode(singlePort bool, config string) string {
	if !singlePort {
		return config
	}
	return strings.Replace(config, "[tftp]\n", "[tftp]\nsingle_port = true\n", 1)
}

// requireTFTPMode checks that the TFTP server ran in the mode the test
// asked for (its start-up line says), so that a single-port variant
// cannot pass on the default mode.
func requireTFTPMode(t *testing.T, logs string, singlePort bool) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var e struct {
			Message    string
			SinglePort *bool `json:"single_port"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Message == "tftp server listening" {
			if e.SinglePort == nil || *e.SinglePort != singlePort {
				t.Fatalf("tftp server listening without single_port=%v: %s", singlePort, line)
			}
			return
		}
	}
	t.Fatalf("no \"tftp server listening\" line in the server log:\n%s", tail(logs, 4000))
}

// transfers returns the files of finished TFTP transfers in the server
// log, in order, with their outcome ("pxelinux.0 ok").
func transfers(logs string) []string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		var e struct{ Message, File, Outcome, Path string }
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		switch e.Message {
		case "transfer", "tftp: refused":
			out = append(out, e.File+" "+e.Outcome)
		case "http":
			out = append(out, "http "+e.Path)
		}
	}
	return out
}

func requireInOrder(t *testing.T, got []string, want ...string) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("server saw, in order:\n  %s\nmissing %q (and after)", strings.Join(got, "\n  "), want[i])
	}
}

func requireMarker(t *testing.T, r qemuResult, logs string) {
	t.Helper()
	if !strings.Contains(r.Serial, Marker+" # mtftpd-e2e-kickstart") {
		t.Fatalf("no kickstart marker on the serial console (qemu: %v)\nserial:\n%s\nserver:\n%s", r.Err, tail(r.Serial, 4000), tail(logs, 6000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func biosQEMU(tap, mac string) []string {
	return biosQEMUWithROM(tap, mac, "/usr/lib/ipxe/qemu/pxe-e1000.rom")
}

// biosQEMUWithROM is biosQEMU with another e1000 PXE ROM.
func biosQEMUWithROM(tap, mac, rom string) []string {
	return []string{"-bios", "/usr/share/seabios/bios-256k.bin",
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		// The PXE ROM is iPXE (Debian's ipxe-qemu); the virtio ROM never
		// runs under SeaBIOS (docs/lab-notes.md, "QEMU and firmware"),
		// e1000 does.
		"-device", "e1000,netdev=n0,mac=" + mac + ",romfile=" + rom, "-boot", "n"}
}

// TestBIOSPXELinux: SeaBIOS + PXE ROM → DHCP from mtftpd → pxelinux.0 →
// config by the standard lookup order → menu → kernel and initrd over
// TFTP → the initrd gets a lease and fetches its kickstart over HTTP from
// mtftpd. One process, one config.
func TestBIOSPXELinux(t *testing.T) { biosPXELinux(t, false) }

// TestSinglePortBIOSPXELinux is TestBIOSPXELinux with the TFTP server in
// single-port mode (docs/design.md, Single-port mode): the iPXE ROM and
// pxelinux (its own TFTP client: config lookups with misses, menu.c32,
// kernel, initrd) get every block from port 69. Single-port mode is off
// by default: make e2e-slow runs this (the unit and interop tests of
// tftp/ cover the mode in make test).
func TestSinglePortBIOSPXELinux(t *testing.T) {
	requireSlow(t)
	biosPXELinux(t, true)
}

func biosPXELinux(t *testing.T, singlePort bool) {
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root := bootFiles(t, httpBase)
	srv := startMtftpd(t, lab, "srv", tftpMode(singlePort, serverConfig(root, `
[dhcp]
mode = "server"
lease_file = "`+filepath.Join(t.TempDir(), "leases.json")+`"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"

# The PXE ROM is iPXE, so match BIOS clients whether or not they are
# iPXE: the classic workflow hands every BIOS machine pxelinux.0.
[[dhcp.boot]]
name = "bios"
arch = [0]
file = "pxelinux.0"
`)), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runQEMU(t, lab, 5*time.Minute, biosQEMU("tap1", biosMAC)...)
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	requireTFTPMode(t, logs, singlePort)
	if !strings.Contains(r.Serial, "mtftpd e2e boot menu") {
		t.Fatalf("the pxelinux menu never showed on the serial console")
	}
	got := transfers(logs)
	// pxelinux's lookup order (docs/protocols.md §10.3): MAC, hex IP shortened
	// one digit at a time, default.
	ipHex := regexp.MustCompile(`pxelinux\.cfg/(C00002[0-9A-F]{2}) not-found`).FindStringSubmatch(strings.Join(got, "\n"))
	if ipHex == nil {
		t.Fatalf("no hex-IP config lookup in:\n%s", strings.Join(got, "\n"))
	}
	h := ipHex[1]
	// Refusals are logged before the ERROR leaves and pxelinux asks for
	// the next name only after it, so the misses keep request order. A
	// finished transfer is logged after its final ACK, which may race the
	// next request's line: the rest is checked for order only where the
	// steps are seconds apart.
	requireInOrder(t, got,
		"pxelinux.cfg/01-52-54-00-e2-e0-01 not-found",
		"pxelinux.cfg/"+h+" not-found", "pxelinux.cfg/"+h[:7]+" not-found", "pxelinux.cfg/"+h[:1]+" not-found",
		"pxelinux.cfg/default ok")
	requireInOrder(t, got, "pxelinux.0 ok", "menu.c32 ok", "vmlinuz ok", "initrd.img ok", "http /ks.cfg")
	requireInOrder(t, got, "ldlinux.c32 ok")
}

// TestUEFIiPXE: OVMF's own UEFI PXE client (virtio-net, no ROM) gets
// ipxe.efi over TFTP (after its tsize probe), iPXE is recognised and
// handed an HTTP script, which loads kernel and initrd over HTTP.
func TestUEFIiPXE(t *testing.T) { uefiIPXE(t, false) }

// TestSinglePortUEFIiPXE is TestUEFIiPXE with the TFTP server in
// single-port mode: OVMF's tsize probe (aborted with ERROR 8) and the
// windowed download of ipxe.efi are served from port 69. Run by make
// e2e-slow, as TestSinglePortBIOSPXELinux.
func TestSinglePortUEFIiPXE(t *testing.T) {
	requireSlow(t)
	uefiIPXE(t, true)
}

func uefiIPXE(t *testing.T, singlePort bool) {
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root := bootFiles(t, httpBase)
	srv := startMtftpd(t, lab, "srv", tftpMode(singlePort, serverConfig(root, `
[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"
# no [[dhcp.boot]]: the built-in rules (UEFI x64 → ipxe.efi, iPXE →
# {{.HTTP}}/boot.ipxe)
`)), "tftp server listening", "http mirror listening", "dhcp server listening")
	requireFiles(t, "/usr/share/OVMF/OVMF_CODE_4M.fd")
	vars := freshVars(t, "/usr/share/OVMF/OVMF_VARS_4M.fd")
	r := runQEMU(t, lab, 5*time.Minute, "-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		"-netdev", "tap,id=n0,ifname=tap1,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+uefiMAC+",romfile=")
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	requireTFTPMode(t, logs, singlePort)
	got := transfers(logs)
	requireInOrder(t, got, "ipxe.efi probe", "ipxe.efi ok", "http /boot.ipxe", "http /vmlinuz", "http /initrd.img", "http /ks.cfg")
	if !strings.Contains(r.Serial, "mtftpd e2e iPXE script for 52:54:00:e2:e0:02") {
		t.Fatalf("the iPXE script did not run")
	}
}

// startOtherDHCP runs the "existing DHCP server" of the ProxyDHCP tests:
// dnsmasq on the switch itself (192.0.2.2), addresses only, no boot
// options. It returns dnsmasq's log.
func startOtherDHCP(t *testing.T, lab *netlab.Lab) *syncBuffer {
	t.Helper()
	requireTools(t, "dnsmasq")
	ctx := context.Background()
	if out, err := lab.Run(ctx, "sw", "ip", "addr", "add", "192.0.2.2/24", "dev", "br0"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	dm := lab.Command(ctx, "sw", "dnsmasq", "--no-daemon", "--port=0", "--interface=br0", "--bind-interfaces",
		"--dhcp-range=192.0.2.150,192.0.2.199,1h", "--dhcp-leasefile="+filepath.Join(t.TempDir(), "dnsmasq.leases"), "--log-dhcp")
	dlog := &syncBuffer{}
	dm.Stdout, dm.Stderr = dlog, dlog
	if err := dm.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() { dm.Process.Kill(); dm.Wait() })
	return dlog
}

// TestProxyDHCP: addresses come from dnsmasq (DHCP only, no boot options)
// on another host of the segment; mtftpd in proxy mode supplies the boot
// file. The same BIOS boot must complete.
func TestProxyDHCP(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Taps: 1})
	root := bootFiles(t, httpBase)
	dlog := startOtherDHCP(t, lab)
	srv := startMtftpd(t, lab, "srv", serverConfig(root, `
[dhcp]
mode = "proxy"

[[dhcp.boot]]
name = "bios"
arch = [0]
file = "pxelinux.0"
`), "tftp server listening", "http mirror listening", "dhcp server listening")
	r := runQEMU(t, lab, 5*time.Minute, biosQEMU("tap1", biosMAC)...)
	logs := srv.logs.String()
	requireMarker(t, r, logs)
	requireInOrder(t, transfers(logs), "pxelinux.0 ok", "pxelinux.cfg/default ok", "vmlinuz ok", "initrd.img ok", "http /ks.cfg")
	if !strings.Contains(dlog.String(), "DHCPACK(br0)") {
		t.Fatalf("dnsmasq handed out no address:\n%s", dlog.String())
	}
	if strings.Contains(logs, `"yiaddr"`) && !strings.Contains(logs, `"yiaddr":"0.0.0.0"`) {
		t.Fatalf("proxy gave out an address:\n%s", logs)
	}
}
