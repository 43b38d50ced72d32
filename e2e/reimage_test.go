package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// The room's machines: name (the disk serial the golden disk prints),
// MAC, firmware.
type roomMachine struct {
	name, mac string
	uefi      bool
}

// reimageRoot lays out the server's root for the reimaging loop: ipxe.efi
// for OVMF's PXE, localboot.efi for UEFI's local boot, the deploy kernel and the deploy environment built by
// `mtftpd image initrd`, the image made from the golden disk by `mtftpd
// image create`, and the example's boot.ipxe template. It returns the
// root and the templates dir.
func reimageRoot(t *testing.T) (root, tmpl string) {
	t.Helper()
	root, tmpl = t.TempDir(), t.TempDir()
	requireFiles(t, "/usr/lib/ipxe/ipxe.efi")
	copyFile(t, "/usr/lib/ipxe/ipxe.efi", filepath.Join(root, "ipxe.efi"))
	buildLocalbootEFI(t, filepath.Join(root, "localboot.efi"))
	must(t, os.MkdirAll(filepath.Join(root, "deploy"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "images"), 0o755))
	vmlinuz, release := kernelPath(t)
	copyFile(t, vmlinuz, filepath.Join(root, "deploy", "vmlinuz"))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(mtftpdBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mtftpd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("image", "initrd", "-o", filepath.Join(root, "deploy", "deploy.cpio.gz"), "--kernel-modules", "/lib/modules/"+release)
	run("image", "create", sharedGoldenDisk(t), "-o", filepath.Join(root, "images", "room.img"))
	copyFile(t, "../examples/reimage-room/templates/boot.ipxe", filepath.Join(tmpl, "boot.ipxe"))
	return root, tmpl
}

// reimageConfig is the server's one config: DHCP (built-in boot rules:
// UEFI → ipxe.efi, iPXE → {{.HTTP}}/boot.ipxe), the template, imaging
// and the tasks.
func reimageConfig(t *testing.T, root, tmpl string, machines []roomMachine, tasks string) string {
	var hosts strings.Builder
	for _, m := range machines {
		fmt.Fprintf(&hosts, "\n[[dhcp.host]]\nmac = %q\nhostname = %q\n", m.mac, m.name)
	}
	return fmt.Sprintf(`
[tftp]
listen = "0.0.0.0:69"
root = %[1]q

[http]
listen = "0.0.0.0:8080"

[dhcp]
mode = "server"

[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.150-192.0.2.199"
%[3]s
[templates]
dir = %[2]q

[imaging]
dir = "%[1]s/images"
upload_token = "e2e-upload-token-0123456789"
admin_token = "e2e-admin-token-0123456789"
state_file = "%[4]s/imaging.json"
kernel = "deploy/vmlinuz"
initrd = "deploy/deploy.cpio.gz"
cmdline = "console=ttyS0 quiet%[6]s"
%[5]s
`, root, tmpl, hosts.String(), t.TempDir(), tasks, agentDebug())
}

// roomVM is the QEMU command line of a room machine: network first
// (bootindex 1), its blank disk second, a virtio RNG for the deploy
// kernel's DHCP (docs/imaging.md, "Agent").
func roomVM(t *testing.T, tap int, m roomMachine, disk string) vmSpec {
	fw := seabiosArgs()
	nic := biosNIC(fmt.Sprintf("tap%d", tap), m.mac, 1)
	if m.uefi {
		fw = ovmfArgs(t)
		nic = uefiNIC(fmt.Sprintf("tap%d", tap), m.mac, 1)
	}
	args := append(fw, nic...)
	args = append(args, diskArgs(disk, m.name, 2, false)...)
	args = append(args, "-device", "virtio-rng-pci")
	return vmSpec{Name: m.name, Args: args}
}

// blankDisk is a sparse file of size: a new machine's disk.
func blankDisk(t *testing.T, size int64) string {
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())
	return p
}

// imagingView is GET /api/imaging, as much as the tests read.
type imagingView struct {
	Machines []struct {
		MAC, Task, State, Reason string
		Attempts                 int
		Seconds                  float64
	}
}

func getImaging(t *testing.T, lab *netlab.Lab) imagingView {
	t.Helper()
	out, err := lab.Run(context.Background(), "srv", "curl", "-sf", "--max-time", "5", "http://192.0.2.1:8080/api/imaging")
	if err != nil {
		t.Fatalf("GET /api/imaging: %v %s", err, out)
	}
	var v imagingView
	must(t, json.Unmarshal([]byte(out), &v))
	return v
}

// nativeSessions are the server's "mtftp: native session" log lines.
func nativeSessions(logs string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "mtftp: native session" {
			out = append(out, m)
		}
	}
	return out
}

// startRoom is the common start of the reimaging tests: the lab with a
// tap per machine, the server's root (prepare, if set, adds to it before
// the server starts) and mtftpd serving it with the machines as
// [[dhcp.host]] and the given tasks.
func startRoom(t *testing.T, machines []roomMachine, tasks string, prepare func(root, tmpl string)) (*netlab.Lab, string, *server) {
	t.Helper()
	requireRoot(t)
	requireTools(t, "qemu-system-x86_64", "curl")
	lab := netlab.New(t, netlab.Options{Taps: len(machines)})
	root, tmpl := reimageRoot(t)
	if prepare != nil {
		prepare(root, tmpl)
	}
	srv := startMtftpd(t, lab, "srv", reimageConfig(t, root, tmpl, machines, tasks),
		"tftp server listening", "http mirror listening", "dhcp server listening")
	return lab, root, srv
}

// TestReimageRoom: three machines with blank disks — two SeaBIOS with the
// iPXE ROM, one OVMF — boot the network first within seconds of each
// other. Each gets the deploy environment from the task, all three
// receive the image in one multicast session, verify, report done and
// reboot; on the next network boot the template sends each to its disk
// (iPXE exit), which boots the deployed system and prints the machine's
// name.
func TestReimageRoom(t *testing.T) {
	machines := []roomMachine{
		{name: "pc01", mac: "52:54:00:e2:e1:01"},
		{name: "pc02", mac: "52:54:00:e2:e1:02"},
		{name: "pc03", mac: "52:54:00:e2:e1:03", uefi: true},
	}
	lab, _, srv := startRoom(t, machines, `
[[imaging.task]]
name = "room"
action = "deploy"
image = "room.img"
hosts = ["pc01", "pc02", "pc03"]
after = "reboot"
retries = 1
min_receivers = 3
max_wait = "3m"
settle = "2s"
`, nil)
	specs := make([]vmSpec, len(machines))
	for i, m := range machines {
		specs[i] = roomVM(t, i+1, m, blankDisk(t, 256<<20))
		specs[i].Stop = []string{localBootLine(m.name), "Kernel panic", "No bootable device"}
	}
	start := time.Now()
	rs := bootVMs(t, lab, vmOptions{Timeout: 15 * time.Minute, Reboot: true}, specs...)
	logs := srv.logs.String()
	for i, m := range machines {
		r := rs[i]
		if !strings.Contains(r.Serial, "mtftpd-agent: done") || !strings.Contains(r.Serial, localBootLine(m.name)) {
			t.Errorf("%s: no deploy and local boot after %v (qemu: %v):\n%s", m.name, r.Elapsed, r.Err, tail(r.Serial, 5000))
			continue
		}
		t.Logf("%s: power-on to its own disk's marker in %v; %s; %s", m.name, r.Elapsed.Round(time.Second),
			timeline(logs, m.mac, start), agentDone(r.Serial))
	}
	if t.Failed() {
		t.Fatalf("server:\n%s", tail(logs, 8000))
	}
	t.Logf("room: power-on to all three markers in %v", time.Since(start).Round(time.Second))
	ss := nativeSessions(logs)
	if len(ss) != 1 || ss[0]["receivers"] != float64(len(machines)) {
		t.Fatalf("want one native session with %d receivers, got %v", len(machines), ss)
	}
	t.Logf("session: %v", ss[0])
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "mtftp: native receiver") || strings.Contains(line, "imaging: machine done") {
			t.Logf("server: %s", line)
		}
	}
	for _, m := range getImaging(t, lab).Machines {
		if m.State != "done" || m.Attempts != 1 {
			t.Errorf("%s: state %s after %d attempts (%s)", m.MAC, m.State, m.Attempts, m.Reason)
		}
	}
}

// imageDigest is `mtftpd image info --json`'s image digest of file.
func imageDigest(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command(mtftpdBin, "image", "info", "--json", file).CombinedOutput()
	if err != nil {
		t.Fatalf("mtftpd image info %s: %v\n%s", file, err, out)
	}
	var info struct {
		ImageDigest string `json:"image_digest"`
	}
	must(t, json.Unmarshal(out, &info))
	return info.ImageDigest
}

// countLines counts the server's log lines with message msg and mac.
func countLines(logs, msg, mac string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		var m struct{ Message, MAC string }
		if json.Unmarshal([]byte(line), &m) == nil && m.Message == msg && m.MAC == mac {
			n++
		}
	}
	return n
}

// TestReimageCaptureAndFailure: a golden machine's disk is captured into
// a new image by a capture task (the captured image holds exactly the
// golden disk); at the same time a machine whose disk is too small ends
// "failed" with that reason after one attempt and then boots locally
// instead of getting the deploy environment again. Then a deploy task
// added at run time with `mtftpd imaging add` puts the captured image on
// a blank UEFI machine, which boots it.
func TestReimageCaptureAndFailure(t *testing.T) {
	machines := []roomMachine{
		{name: "gold", mac: "52:54:00:e2:e2:01"},
		{name: "small", mac: "52:54:00:e2:e2:02"},
		{name: "pc05", mac: "52:54:00:e2:e2:03", uefi: true},
	}
	lab, root, srv := startRoom(t, machines, `
[[imaging.task]]
name = "capture-gold"
action = "capture"
image = "captured.img"
macs = ["52:54:00:e2:e2:01"]
after = "poweroff"

[[imaging.task]]
name = "too-small"
action = "deploy"
image = "room.img"
hosts = ["small"]
after = "reboot"
retries = 0
`, nil)

	// Wave 1: the capture and the failure, side by side.
	goldDisk := filepath.Join(t.TempDir(), "gold.raw")
	if out, err := exec.Command("cp", "--sparse=always", sharedGoldenDisk(t), goldDisk).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	gold := roomVM(t, 1, machines[0], goldDisk)
	gold.Stop = []string{"mtftpd-agent: failed", "Kernel panic"} // success: it powers off
	small := roomVM(t, 2, machines[1], blankDisk(t, 64<<20))
	small.Stop = []string{"Kernel panic"}
	// The small machine's second boot ends in its firmware (iPXE exit,
	// then a blank disk), which prints nothing on the serial console:
	// the server's local-boot decision for it ends its run. The gold
	// machine's run ends when it powers off.
	small.Until = func() bool { return countLines(srv.logs.String(), "imaging: local boot", machines[1].mac) > 0 }
	rs := bootVMs(t, lab, vmOptions{Timeout: 10 * time.Minute, Reboot: true}, gold, small)
	logs := srv.logs.String()
	if r := rs[0]; !strings.Contains(r.Serial, "mtftpd-agent: done") {
		t.Fatalf("gold: the capture did not finish after %v (stopped on %q, qemu: %v):\n%s\nserver:\n%s",
			r.Elapsed, r.Stopped, r.Err, tail(r.Serial, 5000), tail(logs, 5000))
	}
	t.Logf("gold: power-on to captured in %v", rs[0].Elapsed.Round(time.Second))
	captured := filepath.Join(root, "images", "captured.img")
	if got, want := imageDigest(t, captured), imageDigest(t, filepath.Join(root, "images", "room.img")); got != want {
		t.Fatalf("captured image digest %s, the golden disk's image %s", got, want)
	}
	r := rs[1]
	const tooSmall = "no disk large enough for room.img (128 MiB): vda 64 MiB"
	if !strings.Contains(r.Serial, "mtftpd-agent: failed: "+tooSmall) || r.Stopped != "until" {
		t.Fatalf("small: want a failure naming the disk's size, then a local boot (stopped on %q after %v):\n%s\nserver:\n%s",
			r.Stopped, r.Elapsed, tail(r.Serial, 5000), tail(logs, 5000))
	}
	t.Logf("small: power-on to failed and sent to its disk in %v", r.Elapsed.Round(time.Second))
	if n := countLines(logs, "imaging: deploy environment handed out", machines[1].mac); n != 1 {
		t.Fatalf("small: the deploy environment was handed out %d times, want once", n)
	}
	view := getImaging(t, lab)
	for _, m := range view.Machines {
		switch m.MAC {
		case machines[0].mac:
			if m.State != "done" {
				t.Errorf("gold: state %s (%s)", m.State, m.Reason)
			}
		case machines[1].mac:
			if m.State != "failed" || !strings.Contains(m.Reason, tooSmall) {
				t.Errorf("small: state %s, reason %q", m.State, m.Reason)
			}
		}
	}

	// Wave 2: the captured image onto a blank UEFI machine, by a task
	// added at run time.
	out, err := lab.Run(context.Background(), "srv", mtftpdBin, "imaging", "add", "--server", "http://192.0.2.1:8080",
		"--token", "e2e-admin-token-0123456789", "--name", "from-gold", "--deploy", "captured.img", "--host", "pc05")
	if err != nil {
		t.Fatalf("mtftpd imaging add: %v\n%s", err, out)
	}
	pc05 := roomVM(t, 3, machines[2], blankDisk(t, 256<<20))
	pc05.Stop = []string{localBootLine("pc05"), "Kernel panic", "mtftpd localboot: no disk"}
	r = bootVMs(t, lab, vmOptions{Timeout: 10 * time.Minute, Reboot: true}, pc05)[0]
	if !strings.Contains(r.Serial, "mtftpd-agent: done") || !strings.Contains(r.Serial, localBootLine("pc05")+"grub") {
		t.Fatalf("pc05: the captured image did not deploy and boot (stopped on %q after %v):\n%s\nserver:\n%s",
			r.Stopped, r.Elapsed, tail(r.Serial, 5000), tail(srv.logs.String(), 5000))
	}
	t.Logf("pc05: power-on to its own disk's marker in %v", r.Elapsed.Round(time.Second))
}

// agentDone is the agent's "done" line on a serial console.
func agentDone(serial string) string {
	for _, line := range strings.Split(serial, "\n") {
		if strings.Contains(line, "mtftpd-agent: done") {
			return strings.TrimSpace(line)
		}
	}
	return "no done line"
}

// timeline is when the server saw machine mac's steps, from start (the
// log's times have a resolution of one second): the deploy environment
// handed out (firmware, DHCP and iPXE behind it), the agent's done (its
// boot, DHCP, image and verify), and the first local-boot decision after
// it (the reboot, firmware, DHCP and iPXE again).
func timeline(logs, mac string, start time.Time) string {
	at := map[string]time.Duration{}
	for _, line := range strings.Split(logs, "\n") {
		var e struct {
			Message, MAC string
			Time         time.Time
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.MAC != mac {
			continue
		}
		for _, step := range []string{"imaging: deploy environment handed out", "imaging: machine done", "imaging: local boot"} {
			if _, seen := at[step]; !seen && e.Message == step {
				at[step] = e.Time.Sub(start).Round(time.Second)
			}
		}
	}
	return fmt.Sprintf("server: deploy env at %v, done at %v, local boot at %v", at["imaging: deploy environment handed out"],
		at["imaging: machine done"], at["imaging: local boot"])
}

// TestReimagePXELinux: the same loop through pxelinux instead of an iPXE
// script. The example's pxelinux.cfg/default template hands the deploy
// environment (KERNEL, INITRD, APPEND, IPAPPEND 2 for BOOTIF) over TFTP
// to a SeaBIOS machine whose task names it; after the deploy the same
// template says LOCALBOOT 0 and the machine boots the deployed disk.
func TestReimagePXELinux(t *testing.T) {
	requireSlow(t) // make test proves the loop through iPXE (TestReimageRoom)
	requireFiles(t, "/usr/lib/PXELINUX/pxelinux.0", "/usr/lib/syslinux/modules/bios/ldlinux.c32")
	m := roomMachine{name: "pc07", mac: "52:54:00:e2:e3:01"}
	lab, _, srv := startRoom(t, []roomMachine{m}, `
[[dhcp.boot]]
name = "bios"
arch = [0]
file = "pxelinux.0"

[[imaging.task]]
name = "pxelinux"
action = "deploy"
image = "room.img"
hosts = ["pc07"]
after = "reboot"
`, func(root, tmpl string) {
		copyFile(t, "/usr/lib/PXELINUX/pxelinux.0", filepath.Join(root, "pxelinux.0"))
		copyFile(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", filepath.Join(root, "ldlinux.c32"))
		must(t, os.MkdirAll(filepath.Join(tmpl, "pxelinux.cfg"), 0o755))
		copyFile(t, "../examples/reimage-room/templates/pxelinux.cfg/default", filepath.Join(tmpl, "pxelinux.cfg", "default"))
	})
	spec := roomVM(t, 1, m, blankDisk(t, 256<<20))
	spec.Stop = []string{localBootLine(m.name), "Kernel panic"}
	start := time.Now()
	r := bootVMs(t, lab, vmOptions{Timeout: 12 * time.Minute, Reboot: true}, spec)[0]
	logs := srv.logs.String()
	if !strings.Contains(r.Serial, "mtftpd-agent: done") || !strings.Contains(r.Serial, localBootLine(m.name)+"extlinux") {
		t.Fatalf("no deploy and local boot through pxelinux after %v (stopped on %q, qemu: %v):\n%s\nserver:\n%s",
			r.Elapsed, r.Stopped, r.Err, tail(r.Serial, 5000), tail(logs, 6000))
	}
	// Both boots went through pxelinux and its config template; the
	// deploy environment came over TFTP.
	requireInOrder(t, transfers(logs), "pxelinux.0 ok", "pxelinux.cfg/default ok", "deploy/vmlinuz ok", "deploy/deploy.cpio.gz ok",
		"pxelinux.0 ok", "pxelinux.cfg/default ok")
	t.Logf("%s: power-on to its own disk's marker through pxelinux in %v; %s; %s", m.name, r.Elapsed.Round(time.Second),
		timeline(logs, m.mac, start), agentDone(r.Serial))
	if agentDebug() != "" {
		t.Logf("serial:\n%s", r.Serial)
	}
}

// agentDebug adds mtftpd.debug to the deploy kernel's command line when
// MTFTPD_E2E_AGENT_DEBUG is set: the agent then prints the deploy's own
// events (multicast session, NAKs, refetches) on the serial console.
func agentDebug() string {
	if os.Getenv("MTFTPD_E2E_AGENT_DEBUG") != "" {
		return " mtftpd.debug"
	}
	return ""
}
