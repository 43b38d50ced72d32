package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestImagingCLI runs a server with imaging and templates on loopback,
// adds a task with `mtftpd imaging add`, boots a machine by fetching its
// iPXE script, plays its agent against /imaging/, and follows it with
// `imaging list`, `status` and `imaging cancel`. A second server over the
// same state file still knows the machine.
func TestImagingCLI(t *testing.T) {
	dir := t.TempDir()
	root, tmpl := filepath.Join(dir, "tftp"), filepath.Join(dir, "templates")
	os.MkdirAll(filepath.Join(root, "images"), 0o755)
	os.MkdirAll(tmpl, 0o755)
	os.WriteFile(filepath.Join(root, "images", "room.img"), []byte("image"), 0o644)
	ipxe, _ := os.ReadFile("../../examples/reimage-room/templates/boot.ipxe")
	os.WriteFile(filepath.Join(tmpl, "boot.ipxe"), ipxe, 0o644)
	const token = "0123456789abcdef0123"
	httpAddr := freeTCPPort(t)
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte(`
[tftp]
listen = "`+freePort(t)+`"
root = "`+root+`"
[mtftp]
enabled = false
[http]
listen = "`+httpAddr+`"
[templates]
dir = "`+tmpl+`"
[imaging]
dir = "`+root+`/images"
admin_token = "`+token+`"
state_file = "`+dir+`/imaging.json"
kernel = "deploy/vmlinuz"
initrd = "deploy/deploy.cpio.gz"
`), 0o644)
	base := "http://" + httpAddr
	start := func() *exec.Cmd {
		logs := new(syncBuffer)
		srv := exec.Command(bin, "serve", "--config", cfg)
		srv.Stderr = logs
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
		for i := 0; ; i++ {
			if resp, err := http.Get(base + "/api/imaging"); err == nil {
				resp.Body.Close()
				return srv
			}
			if i == 100 {
				t.Fatalf("server did not answer:\n%s", logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	srv := start()
	if out, code := mtftpd(t, "imaging", "add", "--server", base, "--name", "room", "--deploy", "room.img", "--mac", "52:54:00:00:00:01"); code == 0 ||
		!strings.Contains(out, "401") || !strings.Contains(out, "--token") {
		t.Fatalf("add without a token: exit %d %s", code, out)
	}
	if out, code := mtftpd(t, "imaging", "add", "--config", cfg, "--name", "room", "--deploy", "missing.img", "--mac", "52:54:00:00:00:01"); code == 0 ||
		!strings.Contains(out, "imaging.dir") {
		t.Fatalf("add of a missing image: exit %d %s", code, out)
	}
	if out, code := mtftpd(t, "imaging", "add", "--config", cfg, "--name", "room", "--deploy", "room.img", "--mac", "52:54:00:00:00:01", "--retries", "1"); code != 0 {
		t.Fatalf("add: exit %d %s", code, out)
	}
	// The machine boots: its iPXE script carries the deploy environment.
	resp, err := http.Get(base + "/boot.ipxe?mac=52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`mtftpd\.token=([0-9a-f]{32})`).FindSubmatch(script)
	if m == nil || !strings.Contains(string(script), "kernel "+base+"/deploy/vmlinuz") {
		t.Fatalf("boot.ipxe:\n%s", script)
	}
	tok := string(m[1])
	resp, err = http.Get(base + "/imaging/task?mac=52:54:00:00:00:01&token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	var task map[string]any
	json.NewDecoder(resp.Body).Decode(&task)
	resp.Body.Close()
	if resp.StatusCode != 200 || task["image_path"] != "images/room.img" {
		t.Fatalf("task: %d %v", resp.StatusCode, task)
	}
	report := `{"mac":"52:54:00:00:00:01","token":"` + tok + `","state":"receiving","written":50,"total":200}`
	resp, err = http.Post(base+"/imaging/report", "application/json", bytes.NewReader([]byte(report)))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("report: %v %v", resp, err)
	}
	resp.Body.Close()
	out, code := mtftpd(t, "imaging", "list", "--server", base)
	if code != 0 || !regexp.MustCompile(`52:54:00:00:00:01\s+room\s+receiving\s+25\s`).MatchString(out) {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	if out, _ := mtftpd(t, "status", base); !strings.Contains(out, "receiving") {
		t.Errorf("status does not show the machine:\n%s", out)
	}
	// The status page, rendered by a real browser, shows the machine in
	// its reimaging table.
	if chromium, err := exec.LookPath("chromium"); err != nil {
		if os.Geteuid() == 0 {
			t.Fatal("chromium not installed (make test installs it)")
		}
	} else {
		cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--user-data-dir="+filepath.Join(dir, "chromium"), "--virtual-time-budget=5000", "--dump-dom", base+"/status/")
		dom, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		row := regexp.MustCompile(`<tr><td[^>]*>52:54:00:00:00:01</td><td[^>]*>room</td><td[^>]*><span[^>]*>receiving</span></td>.*?25 %`)
		if !row.Match(dom) || strings.Contains(string(dom), `id="imaging-section" hidden`) {
			t.Errorf("the status page's reimaging table lacks the machine:\n%s", dom)
		}
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mtftpd_imaging_machines{state="receiving"} 1`, "mtftpd_imaging_bytes_written_total 50", "mtftpd_imaging_deploy_seconds_count 0"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A restart keeps the machine's attempt.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	start()
	out, _ = mtftpd(t, "imaging", "list", "--server", base)
	if !strings.Contains(out, "receiving") {
		t.Fatalf("after a restart:\n%s", out)
	}
	if out, code := mtftpd(t, "imaging", "cancel", "--config", cfg, "room"); code != 0 {
		t.Fatalf("cancel: %d %s", code, out)
	}
	out, _ = mtftpd(t, "imaging", "list", "--server", base)
	if !strings.Contains(out, "cancelled") {
		t.Fatalf("after cancel:\n%s", out)
	}
	resp, _ = http.Get(base + "/boot.ipxe?mac=52:54:00:00:00:01")
	script, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(script), "\nexit\n") {
		t.Fatalf("boot.ipxe after cancel:\n%s", script)
	}
}
