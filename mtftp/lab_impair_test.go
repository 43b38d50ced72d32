//go:build linux

package mtftp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
)

func rfc2090Args(out string) []string {
	return []string{"--option", "multicast", "--option", "blksize 1428", "-g", "-r", "image.bin", "-l", out, netlab.ServerAddr, "69"}
}

// sessionLogs returns the fields of every RFC 2090 session's log line.
func sessionLogs(t *testing.T, logs string) []map[string]any {
	return logLines(t, logs, "multicast session")
}

// logLines returns the fields of every JSON log line with this message.
func logLines(t *testing.T, logs, message string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"message":"`+message+`"`) {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line %q: %v", line, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

func logNum(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

// TestLabRFC2090Snooping: with IGMP snooping on the bridge (a querier, no
// flooding of unregistered groups) every client still completes, since
// atftp joins the group the OACK names.
func TestLabRFC2090Snooping(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	const clients = 3
	lab, data, _, logs := labServerOpts(t, netlab.Options{Clients: clients, Snooping: true})
	runAll(t, lab, clients, data, rfc2090Args)
	if len(sessionLogs(t, logs.String())) == 0 {
		t.Errorf("no multicast session logged")
	}
}

// TestLabRFC2090MasterKilled: the first of three staggered clients is the
// master; its atftp is SIGKILLed a third of the way in. The server drops
// it, promotes the next client, and the other two complete byte for byte.
func TestLabRFC2090MasterKilled(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	const clients = 3
	lab, data, _, logs := labServer(t, clients)
	outDir := t.TempDir()
	type run struct {
		cmd  *exec.Cmd
		out  *syncBuffer
		done chan error
	}
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	runs := make([]*run, clients+1)
	outFile := func(i int) string { return filepath.Join(outDir, fmt.Sprintf("c%d.bin", i)) }
	start := func(i int) {
		r := &run{out: &syncBuffer{}, done: make(chan error, 1)}
		r.cmd = lab.Command(ctx, netlab.Client(i), "timeout", append([]string{"60", "atftp"}, rfc2090Args(outFile(i))...)...)
		r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { r.done <- r.cmd.Wait() }()
		runs[i] = r
	}
	t.Cleanup(func() {
		for _, r := range runs {
			if r != nil {
				r.cmd.Process.Kill()
			}
		}
	})
	size := func(i int) int64 {
		fi, err := os.Stat(outFile(i))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	// waitSize polls client i's output until it holds n bytes (bounded).
	waitSize := func(i int, n int64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for size(i) < n {
			if time.Now().After(deadline) {
				t.Fatalf("c%d: output still %d bytes after %s, want %d", i, size(i), within, n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	// c1 paces the stream while it is master: at 8 Mbit/s the file takes
	// about 2 s, so the kill lands well before the end even on a busy host.
	if err := lab.Impair("c1", "rate", "8"); err != nil {
		t.Fatal(err)
	}
	start(1)
	waitSize(1, 1, 10*time.Second)
	start(2)
	start(3)
	waitSize(1, int64(len(data)/3), 20*time.Second)
	// Kill atftp itself (the child of timeout) without a word to the server.
	pgrep, err := exec.Command("pgrep", "-P", strconv.Itoa(runs[1].cmd.Process.Pid), "-x", "atftp").Output()
	if err != nil {
		t.Fatalf("pgrep atftp under timeout pid %d: %v", runs[1].cmd.Process.Pid, err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(pgrep))[0])
	if err != nil {
		t.Fatal(err)
	}
	killedAt := size(1)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-runs[1].done
	t.Logf("master c1 killed at %d of %d bytes", killedAt, len(data))
	if killedAt >= int64(len(data)) {
		t.Fatalf("c1 finished before it could be killed")
	}
	for i := 2; i <= clients; i++ {
		if err := <-runs[i].done; err != nil {
			t.Errorf("c%d: atftp: %v\n%s", i, err, runs[i].out.String())
		}
		got, err := os.ReadFile(outFile(i))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("c%d: %d bytes, not the file (%v)\n%s", i, len(got), err, runs[i].out.String())
		}
	}
	// The session log line comes when the session ends, just after the
	// last client's final ACK.
	deadline := time.Now().Add(10 * time.Second)
	var sess []map[string]any
	for {
		sess = sessionLogs(t, logs.String())
		if len(sess) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(sess) != 1 {
		t.Fatalf("want one multicast session, got %d", len(sess))
	}
	m := sess[0]
	t.Logf("session: receivers=%d masters=%d promotions=%d dropped=%d repairs=%d outcome=%v",
		logNum(m, "receivers"), logNum(m, "masters"), logNum(m, "promotions"), logNum(m, "dropped"), logNum(m, "repairs"), m["outcome"])
	if logNum(m, "receivers") != clients || logNum(m, "promotions") < 1 || logNum(m, "dropped") < 1 || m["outcome"] != "ok" {
		t.Errorf("want %d receivers, a promotion, a dropped master and outcome ok: %v", clients, m)
	}
}

// TestLabRFC2090Loss: five RFC 2090 clients with 5 % loss in both
// directions on every client port all get the file byte for byte. atftp's
// master sends only one extra ACK per gap, so an ACK lost twice is
// recovered only because the server re-sends the master its OACK mc=1.
func TestLabRFC2090Loss(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	const clients = 5
	lab, data, _, logs := labServer(t, clients)
	if err := lab.Impair("all", "loss", "5"); err != nil {
		t.Fatal(err)
	}
	_, tx0, _, _, err := lab.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, lab, clients, data, rfc2090Args)
	_, tx1, _, _, err := lab.Counters("srv")
	if err != nil {
		t.Fatal(err)
	}
	tx := tx1 - tx0
	t.Logf("5%% loss: server eth0 TX %d bytes for a %d-byte file (%.2f×)", tx, len(data), float64(tx)/float64(len(data)))
	for _, m := range sessionLogs(t, logs.String()) {
		t.Logf("session: receivers=%d masters=%d promotions=%d dropped=%d blocks_sent=%d repairs=%d outcome=%v",
			logNum(m, "receivers"), logNum(m, "masters"), logNum(m, "promotions"), logNum(m, "dropped"),
			logNum(m, "blocks_sent"), logNum(m, "repairs"), m["outcome"])
	}
	// Loose bound (runs measured 1.3–2.5×): one stream plus repairs, below
	// the five copies unicast would send.
	if tx >= clients*uint64(len(data)) {
		t.Errorf("server sent %d bytes for a %d-byte file under 5%% loss", tx, len(data))
	}
}

// TestLabPXEMTFTPAtftpLoss: ten atftp PXE MTFTP clients with 5 % loss in
// both directions on every client port all get the file byte for byte.
// atftp's acknowledging client ACKs a block number only once: every ACK
// it loses is recovered only because the server, after a timeout, sends
// the block before the outstanding one first (pxeServer.timeout). A
// 256 KiB file (512 blocks) keeps the passes short.
func TestLabPXEMTFTPAtftpLoss(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	const clients = 10
	lab, data, _, logs := labServerCfg(t, netlab.Options{Clients: clients}, 256<<10, "")
	if err := lab.Impair("all", "loss", "5"); err != nil {
		t.Fatal(err)
	}
	runAll(t, lab, clients, data, func(out string) []string {
		return []string{"--mget", "--mtftp", "mcast-ip 239.255.1.1", "--mtftp", "client-port 3001",
			"--mtftp", "listen-delay 2", "--mtftp", "timeout-delay 2", "-r", "image.bin", "-l", out, netlab.ServerAddr, "1759"}
	})
	for _, m := range logLines(t, logs.String(), "mtftp pass") {
		t.Logf("pass: client=%v blocks_sent=%d repairs=%d requests_ignored=%d outcome=%v",
			m["client"], logNum(m, "blocks_sent"), logNum(m, "repairs"), logNum(m, "requests_ignored"), m["outcome"])
	}
}
