//go:build linux

package mtftp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// labFileSize is the interop file: 2 MiB of random bytes (1469 blocks of
// 1428 bytes for RFC 2090, 4097 blocks of 512 for PXE MTFTP).
const labFileSize = 2 << 20

// TestMain removes cmd/mtftpd, which only the lab tests build
// (testutil.Binary), so unit-test runs stay fast.
func TestMain(m *testing.M) { testutil.Main(m) }

// syncBuffer collects a process's output while it runs.
type syncBuffer = testutil.SyncBuffer

// labServer brings up a lab of n clients (snooping off), writes a random
// file and starts mtftpd in srv; it returns the lab, the file and the
// server log.
func labServer(t *testing.T, clients int) (*netlab.Lab, []byte, string, *syncBuffer) {
	t.Helper()
	return labServerOpts(t, netlab.Options{Clients: clients})
}

// labServerOpts is labServer with the lab's options (snooping, ...).
func labServerOpts(t *testing.T, o netlab.Options) (*netlab.Lab, []byte, string, *syncBuffer) {
	t.Helper()
	return labServerCfg(t, o, labFileSize, "")
}

// labServerCfg is labServerOpts with the file's size and more [mtftp]
// settings (TOML lines).
func labServerCfg(t *testing.T, o netlab.Options, size int, mtftpExtra string) (*netlab.Lab, []byte, string, *syncBuffer) {
	t.Helper()
	lab, data, root, logs, _ := labServerProc(t, o, size, mtftpExtra)
	return lab, data, root, logs
}

// labServerProc is labServerCfg that also returns the server's process
// (to stop it).
func labServerProc(t *testing.T, o netlab.Options, size int, mtftpExtra string) (*netlab.Lab, []byte, string, *syncBuffer, *os.Process) {
	t.Helper()
	testutil.Tool(t, "atftp")
	lab := netlab.New(t, o)
	root := t.TempDir()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(root, "image.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	logs, proc := startServerProc(t, lab, fmt.Sprintf(`[tftp]
listen = "0.0.0.0:69"
root = %q
[mtftp]
pxe_listen = "192.0.2.1:1759"
%s
`, root, mtftpExtra), "PXE MTFTP listening", "tftp server listening")
	return lab, data, root, logs, proc
}

// startServer runs mtftpd in srv with config (JSON logs added) and waits
// until its log shows every one of ready.
func startServer(t *testing.T, lab *netlab.Lab, config string, ready ...string) *syncBuffer {
	t.Helper()
	logs, _ := startServerProc(t, lab, config, ready...)
	return logs
}

// startServerProc is startServer that also returns the server's process.
func startServerProc(t *testing.T, lab *netlab.Lab, config string, ready ...string) (*syncBuffer, *os.Process) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mtftpd.toml")
	os.WriteFile(cfg, []byte(config+`
[log]
format = "json"
level = "info"
`), 0o644)
	logs := &syncBuffer{}
	cmd := lab.Command(context.Background(), "srv", testutil.Binary(t), "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("mtftpd log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for _, r := range ready {
		for !strings.Contains(logs.String(), r) {
			if time.Now().After(deadline) {
				t.Fatalf("mtftpd did not start:\n%s", logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return logs, cmd.Process
}

// runAll runs one atftp per client at once, each under `timeout 60`, and
// checks every output file against want.
func runAll(t *testing.T, lab *netlab.Lab, clients int, want []byte, args func(out string) []string) {
	t.Helper()
	outDir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, clients+1)
	outs := make([]string, clients+1)
	for i := 1; i <= clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := filepath.Join(outDir, fmt.Sprintf("c%d.bin", i))
			ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
			defer cancel()
			o, err := lab.Run(ctx, netlab.Client(i), "timeout", append([]string{"60", "atftp"}, args(out)...)...)
			outs[i], errs[i] = o, err
		}()
	}
	wg.Wait()
	sum := sha256.Sum256(want)
	for i := 1; i <= clients; i++ {
		got, err := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("c%d.bin", i)))
		if err != nil || sha256.Sum256(got) != sum {
			t.Errorf("c%d: %d bytes, sha256 mismatch or missing (%v); atftp: %v\n%s", i, len(got), err, errs[i], outs[i])
		}
	}
}

// TestLabRFC2090Atftp: five atftp clients ask for the same 2 MiB file with
// the multicast option at once; all get it, and the server sends about one
// copy, not five.
func TestLabRFC2090Atftp(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	const clients = 5
	lab, data, _, logs := labServer(t, clients)
	_, tx0, _, _, err := lab.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, lab, clients, data, func(out string) []string {
		return []string{"--option", "multicast", "--option", "blksize 1428", "-g", "-r", "image.bin", "-l", out, netlab.ServerAddr, "69"}
	})
	_, tx1, _, _, err := lab.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	tx := tx1 - tx0
	t.Logf("server eth0 TX %d bytes for a %d-byte file (%.2f×)", tx, len(data), float64(tx)/float64(len(data)))
	// One stream is ~1.1× the file (headers, the odd repair); retransmits
	// on a loaded CI machine add some. Unicast would be clients×.
	if tx >= 5*uint64(len(data))/2 {
		t.Errorf("server sent %d bytes for %d clients of a %d-byte file: not one stream", tx, clients, len(data))
	}
	if !strings.Contains(logs.String(), `"message":"multicast session"`) {
		t.Errorf("no multicast session logged")
	}
}

// TestLabPXEMTFTPAtftp: three atftp PXE MTFTP clients (--mget) get the
// same file from the PXE MTFTP listener on 239.255.1.1:3001.
func TestLabPXEMTFTPAtftp(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	const clients = 3
	lab, data, _, _ := labServer(t, clients)
	_, tx0, _, _, err := lab.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, lab, clients, data, func(out string) []string {
		return []string{"--mget", "--mtftp", "mcast-ip 239.255.1.1", "--mtftp", "client-port 3001",
			"--mtftp", "listen-delay 2", "--mtftp", "timeout-delay 2", "-r", "image.bin", "-l", out, netlab.ServerAddr, "1759"}
	})
	_, tx1, _, _, err := lab.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server eth0 TX %d bytes for a %d-byte file (%.2f×)", tx1-tx0, len(data), float64(tx1-tx0)/float64(len(data)))
	// Usually one pass; a client that misses the start of the pass (a
	// loaded machine) legitimately takes a second one (docs/protocols.md §7.4
	// rule 6). Anything at or above clients× is no better than unicast.
	if tx1-tx0 >= uint64(clients)*uint64(len(data)) {
		t.Errorf("server sent %d bytes for %d clients of a %d-byte file: no better than unicast", tx1-tx0, clients, len(data))
	}
}
