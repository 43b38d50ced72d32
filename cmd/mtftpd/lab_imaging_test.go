//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

// TestLabImagingLoop runs the reimaging loop of docs/imaging.md with the
// real binary everywhere but the firmware: in the lab, three machines
// named by tasks fetch their boot script (the example template), run the
// agent with the command line it carries, and receive one image in one
// multicast session onto their disks (loop devices); a fourth, whose disk
// is too small, ends "failed" with that reason. Then every machine's
// script says "exit" (boot the local disk), and the server's API shows the
// states. The QEMU room (e2e) adds the firmware; this is the fast witness.
func TestLabImagingLoop(t *testing.T) {
	for _, tool := range []string{"losetup", "curl"} {
		if _, err := exec.LookPath(tool); err != nil && os.Geteuid() == 0 {
			t.Fatalf("%s not found (make test installs it)", tool)
		}
	}
	const machines = 4                                    // the last one's disk is too small
	l := netlab.New(t, netlab.Options{Clients: machines}) // skips unless root
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	dir := t.TempDir()
	root, tmpl := filepath.Join(dir, "tftp"), filepath.Join(dir, "templates")
	for _, d := range []string{filepath.Join(root, "images"), tmpl} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := os.ReadFile("../../examples/reimage-room/templates/boot.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmpl, "boot.ipxe"), script, 0o644)

	// The golden disk: data, a long run of zeros (holes), data again.
	raw := make([]byte, 12<<20)
	rng := rand.New(rand.NewPCG(14, 14))
	for _, r := range [][2]int{{0, 3 << 20}, {8 << 20, 10 << 20}} {
		for i := r[0]; i < r[1]; i++ {
			raw[i] = byte(rng.Uint32() >> 28) // compressible, not trivially
		}
	}
	src := filepath.Join(dir, "golden.raw")
	os.WriteFile(src, raw, 0o644)
	if out, code := mtftpd(t, "image", "create", src, "-o", filepath.Join(root, "images", "room.img")); code != 0 {
		t.Fatalf("image create: %s", out)
	}

	macs := make([]string, machines)
	disks := make([]string, machines)
	backing := make([]string, machines)
	for i := range machines {
		out, err := l.Run(ctx, netlab.Client(i+1), "cat", "/sys/class/net/eth0/address")
		if err != nil {
			t.Fatalf("%v %s", err, out)
		}
		macs[i] = strings.TrimSpace(string(out))
		size := int64(16 << 20)
		if i == machines-1 {
			size = 1 << 20
		}
		disks[i], backing[i] = shmLoopDisk(t, size)
	}
	var tasks strings.Builder
	for i := range machines {
		// One task per machine: each names its disk (the machines share
		// this host's /dev). The image and the start policy are the same,
		// so the three healthy ones share one multicast session.
		fmt.Fprintf(&tasks, `
[[imaging.task]]
name = "pc%d"
action = "deploy"
image = "room.img"
macs = [%q]
disk = %q
after = "reboot"
retries = 0
min_receivers = %d
max_wait = "30s"
settle = "1s"
`, i+1, macs[i], disks[i], machines-1)
	}
	httpBase := "http://" + netlab.ServerAddr + ":8080"
	cfg := filepath.Join(dir, "mtftpd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
[tftp]
listen = "%[1]s:69"
root = %[2]q
[http]
listen = "%[1]s:8080"
[templates]
dir = %[3]q
[imaging]
dir = "%[2]s/images"
state_file = "%[4]s/imaging.json"
kernel = "deploy/vmlinuz"
initrd = "deploy/deploy.cpio.gz"
cmdline = "console=ttyS0"
%[5]s`, netlab.ServerAddr, root, tmpl, dir, tasks.String())), 0o644)
	srv := l.Command(ctx, "srv", bin, "serve", "--config", cfg, "--log.format", "json")
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); srv.Wait() }()

	curl := func(client int, url string) string {
		t.Helper()
		for range 50 { // the server is up (bounded wait)
			out, err := l.Run(ctx, netlab.Client(client), "curl", "-sf", "--max-time", "5", url)
			if err == nil {
				return string(out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("c%d: %s: no answer\n%s", client, url, logs.String())
		return ""
	}
	kernelLine := regexp.MustCompile(`(?m)^kernel \S+/deploy/vmlinuz initrd=\S+ (.*)$`)
	cmdlines := make([]string, machines)
	for i := range machines {
		s := curl(i+1, httpBase+"/boot.ipxe?mac="+macs[i])
		m := kernelLine.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("pc%d: boot.ipxe has no deploy kernel line:\n%s", i+1, s)
		}
		cmdlines[i] = m[1]
	}

	outs := make([]string, machines)
	errs := make([]error, machines)
	var wg sync.WaitGroup
	for i := range machines {
		wg.Go(func() {
			o, err := l.Run(ctx, netlab.Client(i+1), bin, "agent", "--no-net", "--no-after", "--cmdline", cmdlines[i])
			outs[i], errs[i] = string(o), err
		})
	}
	wg.Wait()
	for i := range machines - 1 {
		if errs[i] != nil || !strings.Contains(outs[i], "mtftpd-agent: done") {
			t.Fatalf("pc%d: agent %v:\n%s\nserver:\n%s", i+1, errs[i], outs[i], logs.String())
		}
		if !strings.Contains(outs[i], "after: reboot") {
			t.Errorf("pc%d: the agent did not end with the task's after action:\n%s", i+1, outs[i])
		}
		got, err := os.ReadFile(backing[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(raw)], raw) {
			t.Fatalf("pc%d: the disk does not hold the image", i+1)
		}
	}
	small := machines - 1
	if errs[small] == nil || !strings.Contains(outs[small], "failed") || !strings.Contains(outs[small], "the image needs 12 MiB") {
		t.Fatalf("pc%d (1 MiB disk): agent %v:\n%s", small+1, errs[small], outs[small])
	}

	// One session carried the image to the three.
	var sessions []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "mtftp: native session" {
			sessions = append(sessions, m)
		}
	}
	if len(sessions) != 1 || sessions[0]["receivers"] != float64(machines-1) {
		t.Fatalf("want one native session with %d receivers, got %v", machines-1, sessions)
	}

	// The server's view, and the next boot of every machine: its disk.
	var view struct {
		Machines []struct {
			MAC, Task, State, Reason string
			Written, Total           int64
		}
	}
	if err := json.Unmarshal([]byte(curl(1, httpBase+"/api/imaging")), &view); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, m := range view.Machines {
		states[m.MAC] = m.State
		if m.State == "failed" && !strings.Contains(m.Reason, "the image needs 12 MiB") {
			t.Errorf("%s failed for %q, want the disk's size named", m.MAC, m.Reason)
		}
	}
	for i := range machines {
		want := "done"
		if i == small {
			want = "failed"
		}
		if states[macs[i]] != want {
			t.Errorf("pc%d: state %q, want %s (%+v)", i+1, states[macs[i]], want, view.Machines)
		}
		if s := curl(i+1, httpBase+"/boot.ipxe?mac="+macs[i]); !strings.Contains(s, "\nexit\n") {
			t.Errorf("pc%d: the next boot is not local:\n%s", i+1, s)
		}
	}
}

// shmLoopDisk is a blank sparse file of size in /dev/shm (the deploys
// write memory, not this machine's disk) on a loop device, detached and
// removed at cleanup. It returns the device and the file.
func shmLoopDisk(t *testing.T, size int64) (dev, file string) {
	t.Helper()
	d, err := os.MkdirTemp("/dev/shm", "mtftpd-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	file = filepath.Join(d, "disk")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	return dev, file
}

// TestAgentCommandLineTask: a deploy named on the kernel command line
// (mtftpd.image and mtftpd.disk, no server task, no token) writes the
// image by HTTP and verifies it; without mtftpd.disk it is refused
// before anything is fetched.
func TestAgentCommandLineTask(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a loop device)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Fatal("losetup not found (make test installs util-linux)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "tftp")
	os.MkdirAll(filepath.Join(root, "images"), 0o755)
	raw := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(15, 15))
	for i := range 1 << 20 {
		raw[i] = byte(rng.Uint32() >> 28)
	}
	src := filepath.Join(dir, "golden.raw")
	os.WriteFile(src, raw, 0o644)
	if out, code := mtftpd(t, "image", "create", src, "-o", filepath.Join(root, "images", "room.img")); code != 0 {
		t.Fatalf("image create: %s", out)
	}
	httpAddr := freeTCPPort(t)
	srv := exec.Command(bin, "serve", "--tftp.listen", freePort(t), "--tftp.root", root, "--mtftp.enabled=false", "--http.listen", httpAddr)
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	dev, backing := shmLoopDisk(t, 8<<20)
	base := "http://" + httpAddr
	run := func(cmdline string) (string, int) {
		for range 50 { // the server is up (bounded wait)
			if c, err := net.Dial("tcp", httpAddr); err == nil {
				c.Close()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return mtftpd(t, "agent", "--no-net", "--no-after", "--cmdline", cmdline)
	}
	if out, code := run("mtftpd.http=" + base + " mtftpd.mac=52:54:00:00:00:09 mtftpd.image=images/room.img"); code == 0 ||
		!strings.Contains(out, "needs mtftpd.disk=") {
		t.Fatalf("without mtftpd.disk: exit %d\n%s", code, out)
	}
	out, code := run("mtftpd.http=" + base + " mtftpd.mac=52:54:00:00:00:09 mtftpd.image=images/room.img mtftpd.disk=" + dev + " mtftpd.after=poweroff")
	if code != 0 || !strings.Contains(out, "mtftpd-agent: done") || !strings.Contains(out, "after: poweroff") {
		t.Fatalf("exit %d\n%s\nserver:\n%s", code, out, logs.String())
	}
	got, err := os.ReadFile(backing)
	if err != nil || !bytes.Equal(got[:len(raw)], raw) {
		t.Fatalf("the disk does not hold the image (%v)", err)
	}
}
