package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

// secretMark is the content of a file beside the root: no answer to any
// corpus entry may contain it.
const secretMark = "SECRET-beside-the-root-must-never-be-served"

// traversalRoot lays out a root with the names firmware uses, and next to
// it everything a hostile name could reach: a secret beside the root,
// symlinks leaving it, a FIFO, a directory and (as root) a device node.
func traversalRoot(t *testing.T) (root string, pxe, bcd []byte) {
	parent := t.TempDir()
	root = filepath.Join(parent, "root")
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(parent, "secret"), []byte(secretMark), 0o644)
	pxe, bcd = bytes.Repeat([]byte("pxelinux"), 300), bytes.Repeat([]byte("bcd!"), 700)
	os.WriteFile(filepath.Join(root, "pxelinux.0"), pxe, 0o644)
	os.WriteFile(filepath.Join(root, "boot", "bcd"), bcd, 0o644)
	for name, target := range map[string]string{
		"rel-out":  "../secret",
		"abs-out":  filepath.Join(parent, "secret"),
		"etc-out":  "/etc/passwd",
		"dev-out":  "/dev/zero",
		"dir-out":  "..",
		"loop":     "loop",
		"inside":   "boot/bcd",
		"boot/up":  "../../secret",
		"boot/sib": "../pxelinux.0",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := testutil.Mkfifo(filepath.Join(root, "fifo")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(root, "dir"), 0o755)
	if os.Geteuid() == 0 {
		// /dev/zero's numbers (1, 5): a read would never end.
		if err := testutil.MkCharDevice(filepath.Join(root, "zero"), 1, 5); err != nil {
			t.Logf("mknod (device entry left out): %v", err)
		}
	}
	return root, pxe, bcd
}

// traversalNames is the corpus: ".." in every spelling, backslashes,
// URL encodings (which TFTP must take literally), NUL, over-long names and
// the special files of traversalRoot.
var traversalNames = []string{
	"..", "boot/../pxelinux.0", "../secret", "/../secret", "//../secret", "./../secret", "boot/../../secret", "boot/./../../secret",
	`..\secret`, `\..\secret`, `boot\..\..\secret`, `\\..\\secret`, `..\/secret`, `../\secret`,
	"....//secret", "..//secret", ".../secret", "../root/../secret", "/boot/../../../../../../etc/passwd",
	"%2e%2e/secret", "%2e%2e%2fsecret", "..%2fsecret", "%2E%2E%5Csecret", "%252e%252e%252fsecret", "..%c0%afsecret",
	"\xc0\xae\xc0\xae/secret", "\uff0e\uff0e/secret", "..\x00/pxelinux.0", "pxelinux.0\x00/../../secret",
	strings.Repeat("a/", 300) + "x", strings.Repeat("x", 5000), strings.Repeat("../", 200) + "secret",
	"rel-out", "abs-out", "etc-out", "dev-out", "dir-out/secret", "dir-out/root/pxelinux.0", "loop",
	"boot/up", "fifo", "dir", "zero", "/", "", "dir-out",
}

// TestTraversalCorpus runs the corpus against the real server over TFTP
// (mtftpd's client and tftp-hpa) and HTTP (curl --path-as-is): every entry
// is refused and nothing beside the root is ever sent, while firmware
// spellings (/pxelinux.0, \boot\bcd) and symlinks inside the root work.
func TestTraversalCorpus(t *testing.T) {
	root, pxe, bcd := traversalRoot(t)
	addr, httpAddr := freePort(t), freeTCPPort(t)
	srv := exec.Command(bin, "serve", "--tftp.root", root, "--tftp.listen", addr, "--http.listen", httpAddr,
		"--log.format", "json", "--mtftp.enabled=false")
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	get := func(name string) ([]byte, error) {
		var buf bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := (&tftp.Client{Retries: 3, Timeout: 300 * time.Millisecond}).Get(ctx, addr, name, &buf)
		return buf.Bytes(), err
	}
	var err error
	for i := 0; i < 100; i++ { // wait (bounded) for the server
		if _, err = get("pxelinux.0"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("server not up: %v\n%s", err, logs.String())
	}

	good := map[string][]byte{"/pxelinux.0": pxe, `\boot\bcd`: bcd, "boot/bcd": bcd, `\\boot\\bcd`: bcd,
		"inside": bcd, "boot/sib": pxe}
	for name, want := range good {
		if got, err := get(name); err != nil || !bytes.Equal(got, want) {
			t.Errorf("TFTP %q: %v (%d bytes, want %d)", name, err, len(got), len(want))
		}
	}
	for _, name := range traversalNames {
		got, err := get(name)
		var re *tftp.RemoteError
		if bytes.Contains(got, []byte(secretMark)) || !errors.As(err, &re) {
			t.Errorf("TFTP %q: %d bytes, %v: want a refusal", name, len(got), err)
		}
	}

	// tftp-hpa sends the name as typed: backslashes and dots untouched.
	if hpa, err := exec.LookPath("tftp"); err == nil {
		host, port := splitAddr(t, addr)
		dir := t.TempDir()
		hpaGet := func(name string) []byte {
			local := filepath.Join(dir, "out")
			os.Remove(local)
			exec.Command(hpa, "-m", "binary", host, port, "-c", "get", name, local).Run()
			b, _ := os.ReadFile(local)
			return b
		}
		for _, name := range []string{"/pxelinux.0", `\boot\bcd`} {
			if got := hpaGet(name); !bytes.Equal(got, good[name]) {
				t.Errorf("tftp-hpa %q: %d bytes, want %d", name, len(got), len(good[name]))
			}
		}
		for _, name := range []string{"../secret", `\..\secret`, "rel-out", "abs-out", "dir-out/secret", "%2e%2e/secret"} {
			if got := hpaGet(name); len(got) > 0 {
				t.Errorf("tftp-hpa %q: got %d bytes, want a refusal", name, len(got))
			}
		}
	} else {
		t.Log("tftp-hpa client not installed (scripts/test-deps.sh): its part skipped")
	}

	curl := testutil.Tool(t, "curl")
	httpGet := func(path string) (int, []byte) {
		out, _ := exec.Command(curl, "-s", "--path-as-is", "-g", "-m", "10", "-w", "\n%{http_code}", "http://"+httpAddr+path).Output()
		i := bytes.LastIndexByte(out, '\n')
		if i < 0 {
			return 0, out
		}
		code := 0
		for _, c := range out[i+1:] {
			code = code*10 + int(c-'0')
		}
		return code, out[:i]
	}
	for path, want := range map[string][]byte{"/pxelinux.0": pxe, "/boot/bcd": bcd, "/inside": bcd, "/boot/sib": pxe, "//boot//bcd": bcd} {
		if code, body := httpGet(path); code != 200 || !bytes.Equal(body, want) {
			t.Errorf("HTTP %s: %d, %d bytes (want 200, %d)", path, code, len(body), len(want))
		}
	}
	httpNames := []string{"/../secret", "/boot/../../secret", `/..\secret`, `/boot\..\..\secret`, "/%2e%2e/secret",
		"/%2e%2e%2fsecret", "/..%2fsecret", "/%2E%2E%5Csecret", "/%252e%252e%252fsecret", "/..%c0%afsecret",
		"/..%00/secret", "/pxelinux.0%00", "/pxelinux.0%00/../../secret", "/" + strings.Repeat("a/", 300) + "x",
		"/" + strings.Repeat("x", 5000), "/" + strings.Repeat("../", 200) + "secret",
		"/rel-out", "/abs-out", "/etc-out", "/dev-out", "/dir-out/secret", "/dir-out/root/pxelinux.0", "/loop",
		"/boot/up", "/fifo", "/zero", "/%2e%2e", "/dir/..%2f..%2fsecret"}
	for _, path := range httpNames {
		code, body := httpGet(path)
		if bytes.Contains(body, []byte(secretMark)) || code == 200 || code == 0 {
			t.Errorf("HTTP %.60q: %d with %d bytes: want a refusal", path, code, len(body))
		}
	}
	// The server survived all of it and still serves.
	if got, err := get("/pxelinux.0"); err != nil || !bytes.Equal(got, pxe) {
		t.Fatalf("after the corpus: %v\n%s", err, logs.String())
	}
	if strings.Contains(logs.String(), "panic") {
		t.Fatalf("server log shows a panic:\n%s", logs.String())
	}
}

func splitAddr(t *testing.T, addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("address %q has no port", addr)
	}
	return addr[:i], addr[i+1:]
}
