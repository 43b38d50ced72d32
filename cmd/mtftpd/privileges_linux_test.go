package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mtftpd/mtftpd/internal/privdrop"
)

// privilegedPorts finds a free UDP and a free TCP port below 1024 on
// loopback (only root can bind them; that is the point).
func privilegedPorts(t *testing.T) (udp, tcp string) {
	for p := 900; p < 1000 && (udp == "" || tcp == ""); p++ {
		a := fmt.Sprintf("127.0.0.1:%d", p)
		if udp == "" {
			if pc, err := net.ListenPacket("udp4", a); err == nil {
				pc.Close()
				udp = a
				continue
			}
		}
		if tcp == "" {
			if ln, err := net.Listen("tcp4", a); err == nil {
				ln.Close()
				tcp = a
			}
		}
	}
	if udp == "" || tcp == "" {
		t.Skip("no free port in 900..999 on loopback")
	}
	return udp, tcp
}

// worldDir makes a temp directory every user can enter and read.
func worldDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// TestPrivilegeDrop: started as root with server.user, serve opens its
// privileged ports (TFTP and HTTP below 1024), then every thread runs as
// that user; downloads work, a root the user cannot read gets ERRORs (and
// works again once readable), an upload lands owned by that user, and a
// write_dir the user cannot write, or an unknown user, stops the server
// with an error instead of running as root.
func TestPrivilegeDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts mtftpd as root and checks it drops to nobody")
	}
	id, err := privdrop.Lookup("nobody", "")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	base := worldDir(t)
	root, up, closed := filepath.Join(base, "root"), filepath.Join(base, "up"), filepath.Join(base, "closed")
	for _, d := range []string{root, up, closed} {
		os.Mkdir(d, 0o755)
	}
	os.Chown(up, id.UID, id.GID)
	payload := bytes.Repeat([]byte("netboot "), 5000)
	os.WriteFile(filepath.Join(root, "pxelinux.0"), payload, 0o644)

	udp, tcp := privilegedPorts(t)
	srv := exec.Command(bin, "serve", "--tftp.root", root, "--tftp.listen", udp, "--http.listen", tcp,
		"--tftp.write_dir", up, "--server.user", "nobody", "--log.format", "json")
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	dir := t.TempDir()
	waitServing(t, udp, "pxelinux.0", filepath.Join(dir, "p"), &logs)
	if got, _ := os.ReadFile(filepath.Join(dir, "p")); !bytes.Equal(got, payload) {
		t.Fatalf("get over the privileged port: %d bytes differ\n%s", len(got), logs.String())
	}
	if !strings.Contains(logs.String(), "privileges dropped") {
		t.Fatalf("no drop logged:\n%s", logs.String())
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", srv.Process.Pid))
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		for _, key := range []string{"Uid:", "Gid:"} {
			want := id.UID
			if key == "Gid:" {
				want = id.GID
			}
			for line := range strings.Lines(string(b)) {
				if rest, ok := strings.CutPrefix(line, key); ok {
					for _, f := range strings.Fields(rest) {
						if n, _ := strconv.Atoi(f); n != want {
							t.Fatalf("%s: %s%s (want all %d)", p, key, rest, want)
						}
					}
				}
			}
		}
	}
	if len(tasks) < 2 {
		t.Fatalf("only %d threads listed", len(tasks))
	}
	// The root turns unreadable for that user: requests are refused with
	// an ERROR, the server stays up, and serves again once it is fixed.
	os.Chmod(root, 0o000)
	out, code := mtftpd(t, "get", "--retries", "2", "--timeout", "200ms", "-o", filepath.Join(dir, "q"), udp, "pxelinux.0")
	os.Chmod(root, 0o755)
	if code == 0 || !strings.Contains(out, "tftp error") {
		t.Fatalf("get from an unreadable root: exit %d %q, want an ERROR from the server", code, out)
	}
	if out, code = mtftpd(t, "get", "-o", filepath.Join(dir, "q"), udp, "pxelinux.0"); code != 0 {
		t.Fatalf("after the root is readable again: %s\n%s", out, logs.String())
	}
	// An upload is written by the unprivileged user.
	src := filepath.Join(dir, "log.txt")
	os.WriteFile(src, payload[:1000], 0o644)
	if hpa, err := exec.LookPath("tftp"); err == nil {
		host, port := splitAddr(t, udp)
		if o, err := exec.Command(hpa, "-m", "binary", host, port, "-c", "put", src, "log.txt").CombinedOutput(); err != nil {
			t.Fatalf("tftp put: %v %s", err, o)
		}
		st, err := os.Stat(filepath.Join(up, "log.txt"))
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != uint32(id.UID) {
			t.Fatalf("upload: %v, owner %v (want uid %d)", err, st, id.UID)
		}
	}
	srv.Process.Signal(syscall.SIGTERM)
	srv.Wait()

	for name, args := range map[string][]string{
		"unwritable write_dir": {"--tftp.write_dir", closed, "--server.user", "nobody"},
		"unknown user":         {"--server.user", "no-such-user-mtftpd"},
	} {
		u2, _ := privilegedPorts(t)
		all := append([]string{"serve", "--tftp.root", root, "--tftp.listen", u2, "--http.listen", ""}, args...)
		out, code := mtftpd(t, all...)
		if code == 0 || !strings.Contains(out, "server.user") && !strings.Contains(out, "not writable") {
			t.Errorf("%s: exit %d, %q: want a non-zero exit that says why", name, code, out)
		}
	}
}

// TestCapabilitiesDropped is the attack of issue 13 finding 19: under
// dist/mtftpd.service mtftpd runs as an unprivileged user with ambient
// CAP_NET_BIND_SERVICE, and kept it for its whole life, so a compromised
// process could bind any privileged port. Started the same way (setpriv:
// user nobody, the capability ambient, inheritable and in the bounding
// set, no_new_privs), it now binds its privileged ports, then no thread
// holds any capability, and it still serves.
func TestCapabilitiesDropped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts mtftpd as nobody with CAP_NET_BIND_SERVICE")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) not installed: %v", err)
	}
	id, err := privdrop.Lookup("nobody", "")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	root := filepath.Join(worldDir(t), "root")
	os.Mkdir(root, 0o755)
	payload := bytes.Repeat([]byte("undionly "), 3000)
	os.WriteFile(filepath.Join(root, "undionly.kpxe"), payload, 0o644)
	udp, tcp := privilegedPorts(t)
	srv := exec.Command(setpriv, "--reuid", strconv.Itoa(id.UID), "--regid", strconv.Itoa(id.GID), "--clear-groups",
		"--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service", "--bounding-set=-all,+net_bind_service", "--no-new-privs",
		"--", bin, "serve", "--tftp.root", root, "--tftp.listen", udp, "--http.listen", tcp, "--log.format", "json")
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	dir := t.TempDir()
	waitServing(t, udp, "undionly.kpxe", filepath.Join(dir, "u"), &logs)
	if got, _ := os.ReadFile(filepath.Join(dir, "u")); !bytes.Equal(got, payload) {
		t.Fatalf("get over the privileged port: %d bytes\n%s", len(got), logs.String())
	}
	if !strings.Contains(logs.String(), "capabilities dropped") {
		t.Errorf("no drop logged:\n%s", logs.String())
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", srv.Process.Pid))
	if len(tasks) < 2 {
		t.Fatalf("only %d threads listed", len(tasks))
	}
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		c, err := privdrop.ParseCaps(string(b))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Empty() || !c.NoNewPrivs {
			t.Errorf("%s: capabilities %+v after the ports are open (want none)", p, c)
		}
	}
	// Still serving over HTTP too.
	resp, err := http.Get("http://" + tcp + "/undionly.kpxe")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP after the drop: %s", resp.Status)
	}
}
