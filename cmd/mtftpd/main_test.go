package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

// bin is the mtftpd binary every test here runs (testutil.BuildBinary).
var bin string

func TestMain(m *testing.M) {
	var err error
	if bin, err = testutil.BuildBinary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testutil.Main(m)
}

func mtftpd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestVersion(t *testing.T) {
	out, code := mtftpd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "mtftpd ") {
		t.Fatalf("%d %q", code, out)
	}
}

func TestPrintConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(cfg, []byte("[tftp]\nroot = \"/srv/boot\"\nmax_windowsize = 8\n"), 0o644)
	out, code := mtftpd(t, "serve", "--config", cfg, "--tftp.max_windowsize", "16", "--print-config")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{`root = "/srv/boot"`, "max_windowsize = 16", `listen = "0.0.0.0:69"`} {
		if !strings.Contains(out, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, out)
		}
	}
}

func TestInvalidConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(cfg, []byte("[tftp]\nmax_blksize = 3\nretries = 0\n"), 0o644)
	out, code := mtftpd(t, "serve", "--config", cfg)
	if code == 0 || !strings.Contains(out, "tftp.max_blksize") || !strings.Contains(out, "tftp.retries") {
		t.Fatalf("exit %d, output %q: want non-zero naming both fields", code, out)
	}
	out, code = mtftpd(t, "serve", "--tftp.min_rto", "soon", "--print-config")
	if code == 0 || !strings.Contains(out, "--tftp.min_rto") {
		t.Fatalf("bad flag: exit %d %q", code, out)
	}
}

func freeTCPPort(t *testing.T) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freePort(t *testing.T) string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// startDemo runs `mtftpd serve --demo` on free loopback ports, with
// extra arguments if given, and waits (bounded) until it answers,
// fetching hello.txt into hello. The server is killed at the end of the
// test.
func startDemo(t *testing.T, hello string, extra ...string) (srv *exec.Cmd, addr, httpAddr string, logs *syncBuffer) {
	t.Helper()
	addr, httpAddr, logs = freePort(t), freeTCPPort(t), new(syncBuffer)
	srv = exec.Command(bin, append([]string{"serve", "--demo", "--tftp.listen", addr, "--http.listen", httpAddr}, extra...)...)
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	var out string
	var code int
	for i := 0; i < 100; i++ {
		out, code = mtftpd(t, "get", "--retries", "1", "--timeout", "100ms", "-o", hello, addr, "hello.txt")
		if code == 0 {
			return srv, addr, httpAddr, logs
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("get hello.txt: %s\nserver log:\n%s", out, logs.String())
	return
}

// TestDemoServeAndGet runs what the README tells a new user to run: the
// demo server, then `mtftpd get` of the demo files, then SIGTERM.
func TestDemoServeAndGet(t *testing.T) {
	dir := t.TempDir()
	srv, addr, httpAddr, logs := startDemo(t, filepath.Join(dir, "hello.txt"))
	out, code := mtftpd(t, "get", "--blksize", "1468", "--windowsize", "64", "--tsize", "-o", filepath.Join(dir, "big.img"), addr, "big.img")
	if code != 0 || !strings.Contains(out, "33554432 bytes") {
		t.Fatalf("get big.img: exit %d %s", code, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "big.img"))
	want := make([]byte, demoBigSize)
	io.ReadFull(rand.NewChaCha8([32]byte{'m', 't', 'f', 't', 'p', 'd'}), want)
	if !bytes.Equal(got, want) {
		t.Fatal("big.img differs from the generated demo content")
	}
	resp, err := http.Get("http://" + httpAddr + "/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hello, _ := os.ReadFile(filepath.Join(dir, "hello.txt"))
	if resp.StatusCode != 200 || !bytes.Equal(body, hello) || len(hello) == 0 {
		t.Fatalf("demo HTTP hello.txt: %d %q", resp.StatusCode, body)
	}
	// -o a device or FIFO (/dev/null) writes through it and leaves it
	// what it is: a rename over /dev/null, as root, had put a regular
	// file there. A FIFO of the test's own stands in for the device.
	fifo := filepath.Join(dir, "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	drained := make(chan int64, 1)
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			drained <- -1
			return
		}
		n, _ := io.Copy(io.Discard, f)
		f.Close()
		drained <- n
	}()
	out, code = mtftpd(t, "get", "--blksize", "1468", "--windowsize", "64", "-o", fifo, addr, "big.img")
	if st, err := os.Lstat(fifo); code != 0 || err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("get -o FIFO: exit %d %s; the FIFO is now %v", code, out, st.Mode())
	}
	if n := <-drained; n != demoBigSize {
		t.Fatalf("read %d bytes through the FIFO, want %d", n, demoBigSize)
	}
	out, code = mtftpd(t, "get", "-o", filepath.Join(dir, "nope"), addr, "no/such/file")
	if code == 0 || !strings.Contains(out, "file not found") {
		t.Fatalf("missing file: exit %d %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("a failed get left its output file")
	}
	srv.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop after SIGTERM")
	}
	if !strings.Contains(logs.String(), "transfer") || !strings.Contains(logs.String(), "big.img") {
		t.Fatalf("no transfer log line:\n%s", logs.String())
	}
}

// TestKillSwitches: MTFTPD_DISABLE_GSO and MTFTPD_DISABLE_MMSG turn the
// fast paths off (seen in the start-up line and in the transfer's
// datagrams-per-syscall), and the bytes still arrive intact.
func TestKillSwitches(t *testing.T) {
	for _, env := range []string{"MTFTPD_DISABLE_GSO=1", "MTFTPD_DISABLE_MMSG=1"} {
		t.Run(env, func(t *testing.T) {
			addr := freePort(t)
			srv := exec.Command(bin, "serve", "--demo", "--tftp.listen", addr, "--http.listen", "", "--log.format", "json")
			srv.Env = append(os.Environ(), env)
			var logs syncBuffer
			srv.Stderr = &logs
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { srv.Process.Kill(); srv.Wait() }()
			dir := t.TempDir()
			var out string
			var code int
			for i := 0; i < 100; i++ {
				out, code = mtftpd(t, "get", "--blksize", "1468", "--windowsize", "64", "--retries", "1", "--timeout", "200ms", "-o", filepath.Join(dir, "big.img"), addr, "big.img")
				if code == 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if code != 0 {
				t.Fatalf("get: %s\n%s", out, logs.String())
			}
			got, _ := os.ReadFile(filepath.Join(dir, "big.img"))
			want := make([]byte, demoBigSize)
			io.ReadFull(rand.NewChaCha8([32]byte{'m', 't', 'f', 't', 'p', 'd'}), want)
			if !bytes.Equal(got, want) {
				t.Fatal("content differs")
			}
			srv.Process.Signal(syscall.SIGTERM)
			srv.Wait()
			l := logs.String()
			if !strings.Contains(l, `"gso":false`) {
				t.Fatalf("start-up line does not show gso off:\n%s", l)
			}
			if env == "MTFTPD_DISABLE_MMSG=1" && !strings.Contains(l, `"sendmmsg":false`) {
				t.Fatalf("start-up line does not show sendmmsg off:\n%s", l)
			}
		})
	}
}

// syncBuffer collects a process's output while it runs.
type syncBuffer = testutil.SyncBuffer

// TestExamples loads every file in examples/ through the binary, as the
// README tells admins to.
func TestExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.toml")
	if len(files) < 4 {
		t.Fatalf("examples: %v", files)
	}
	for _, f := range files {
		out, code := mtftpd(t, "serve", "--config", f, "--print-config")
		if code != 0 || !strings.Contains(out, "[dhcp]") {
			t.Errorf("%s: exit %d\n%s", f, code, out)
		}
	}
}
