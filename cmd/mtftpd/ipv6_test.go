package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil"
)

// freeDualPorts returns a UDP and a TCP port free on [::] (both families).
func freeDualPorts(t *testing.T) (udp, tcp int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port, ln.Addr().(*net.TCPAddr).Port
}

// TestServeDualStack: `mtftpd serve` with tftp.listen and http.listen
// [::]:port (docs/design.md, "IPv6") serves TFTP to ::1 (mtftpd get,
// curl tftp://[::1]) and 127.0.0.1 from one socket, in both TFTP modes,
// and HTTP to both; the log names the IPv4 client as IPv4.
func TestServeDualStack(t *testing.T) {
	curl := testutil.Tool(t, "curl")
	for _, single := range []string{"false", "true"} {
		t.Run("single_port="+single, func(t *testing.T) {
			dir := t.TempDir()
			up, hp := freeDualPorts(t)
			tftpV6, tftpV4 := "[::1]:"+strconv.Itoa(up), "127.0.0.1:"+strconv.Itoa(up)
			logs := new(syncBuffer)
			srv := exec.Command(bin, "serve", "--demo", "--tftp.listen", "[::]:"+strconv.Itoa(up),
				"--http.listen", "[::]:"+strconv.Itoa(hp), "--tftp.single_port="+single, "--log.format", "json")
			srv.Stderr = logs
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
			hello := filepath.Join(dir, "hello.txt")
			var out string
			code := -1
			for i := 0; i < 100 && code != 0; i++ {
				out, code = mtftpd(t, "get", "--retries", "1", "--timeout", "100ms", "-o", hello, tftpV6, "hello.txt")
				if code != 0 {
					time.Sleep(100 * time.Millisecond)
				}
			}
			want, err := os.ReadFile(hello)
			if code != 0 || err != nil || len(want) == 0 {
				t.Fatalf("mtftpd get from %s: exit %d %s\nserver log:\n%s", tftpV6, code, out, logs.String())
			}
			for _, url := range []string{"tftp://" + tftpV6 + "/hello.txt", "tftp://" + tftpV4 + "/hello.txt",
				"http://[::1]:" + strconv.Itoa(hp) + "/hello.txt", "http://127.0.0.1:" + strconv.Itoa(hp) + "/hello.txt"} {
				got, err := exec.Command(curl, "-sS", "--max-time", "60", url).Output()
				if err != nil || string(got) != string(want) {
					t.Fatalf("curl %s: %v, %q\nserver log:\n%s", url, err, got, logs.String())
				}
			}
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), `"client":"127.0.0.1:`); {
				if time.Now().After(deadline) {
					t.Fatalf("no transfer logged for client 127.0.0.1:\n%s", logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), "curl -s tftp://[::1]:") {
				t.Fatalf("the demo help shows no dialable IPv6 address:\n%s", logs.String())
			}
			if strings.Contains(logs.String(), "::ffff:") {
				t.Fatalf("a v4-mapped address in the log:\n%s", logs.String())
			}
		})
	}
}
