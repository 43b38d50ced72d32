package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/netlab"
	"github.com/mtftpd/mtftpd/internal/testutil"
)

// TestMain removes cmd/mtftpd, built on first use (testutil.Binary).
func TestMain(m *testing.M) { testutil.Main(m) }

// labDisk writes a sparse raw disk of size bytes holding about data bytes
// in runs of 1–4 MiB between holes: half random (incompressible), half
// text-like (compresses about 4:1), with some runs repeated (dedup).
func labDisk(t testing.TB, dir string, seed uint64, size, data int64) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("disk-%d.raw", seed))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 7))
	words := []string{"boot ", "kernel ", "initrd ", "root=/dev/sda1 ", "quiet ", "console=ttyS0 ", "\n", "mtftpd ", "image "}
	var prev []byte
	written := int64(0)
	step := size / (data / (2 << 20))
	for off := int64(0); written < data && off+4<<20 < size; off += step {
		n := int64(1+r.IntN(4)) << 20
		b := make([]byte, n)
		switch r.IntN(5) {
		case 0, 1:
			for i := 0; i < len(b); i += 8 {
				v := r.Uint64()
				for j := 0; j < 8 && i+j < len(b); j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		case 2, 3:
			for i := 0; i < len(b); {
				i += copy(b[i:], words[r.IntN(len(words))])
			}
		default:
			if prev != nil {
				b = prev
			}
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		prev = b
		written += int64(len(b))
	}
	return p
}

// labImage images raw into root/images/name.
func labImage(t testing.TB, raw, root, name string) *Index {
	t.Helper()
	src, err := OpenSource(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	os.MkdirAll(filepath.Join(root, "images"), 0o755)
	ix, err := WriteFile(context.Background(), src, filepath.Join(root, "images", name), Meta{Source: raw}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// labServer runs mtftpd in the lab's srv namespace serving root, with
// extra config appended; it returns the log.
func labServer(t *testing.T, lab *netlab.Lab, root, extra string) *testutil.SyncBuffer {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mtftpd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[tftp]
listen = "0.0.0.0:69"
root = %q
[http]
listen = "0.0.0.0:80"
[log]
format = "json"
%s
`, root, extra)), 0o644)
	logs := &testutil.SyncBuffer{}
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
	for !strings.Contains(logs.String(), "tftp server listening") || !strings.Contains(logs.String(), "http mirror listening") {
		if time.Now().After(deadline) {
			t.Fatalf("mtftpd did not start:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return logs
}

// sessions returns the server's native session log lines (bounded wait
// until there are n).
func sessions(t *testing.T, logs *testutil.SyncBuffer, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out []map[string]any
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == "mtftp: native session" {
				out = append(out, m)
			}
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func num(m map[string]any, k string) int64 {
	v, _ := m[k].(float64)
	return int64(v)
}

// loopDisk makes a blank sparse file of size in /dev/shm (tmpfs: the
// deploys write memory, not the machine's disk) on a loop device.
func loopDisk(t *testing.T, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "mtftpd-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "disk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return losetup(t, p, 0)
}

// deployRun is one `mtftpd image deploy --json` in a client namespace.
type deployRun struct {
	out string
	err error
	sum struct {
		Fetched       int     `json:"chunks_fetched"`
		FetchedStored int64   `json:"fetched_stored_bytes"`
		Held          int     `json:"chunks_held"`
		Via           string  `json:"via"`
		Seconds       float64 `json:"seconds"`
	}
}

func deploy(t *testing.T, lab *netlab.Lab, client int, args ...string) *deployRun {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := &deployRun{}
	full := append([]string{"timeout", "280", testutil.Binary(t), "image", "deploy", "--json", "--timeout", "30s"}, args...)
	out, err := lab.Command(ctx, netlab.Client(client), full[0], full[1:]...).CombinedOutput()
	r.out, r.err = string(out), err
	if err == nil {
		if i := strings.Index(r.out, "{"); i >= 0 {
			r.err = json.Unmarshal([]byte(r.out[i:]), &r.sum)
		}
	}
	return r
}

func sameAsRaw(t *testing.T, raw, dev string, size int64) {
	t.Helper()
	out, err := exec.Command("cmp", "-n", strconv.FormatInt(size, 10), raw, dev).CombinedOutput()
	if err != nil {
		t.Errorf("cmp %s %s: %v %s", raw, dev, err, out)
	}
}

// TestLabImageRoom: 20 machines deploy one 1 GiB-raw image (data and
// holes) to their own loop devices from one multicast stream, and again
// with 5 % loss on every client port. Every disk is verified (the image
// digest, re-read by --verify; cmp against the raw disk for some), and
// the server sends about one copy of the image: ≤ 1.05× its stored size
// clean, ≤ 1.5× with loss. At 5 % loss the repairs cost 1.12–1.14× alone
// and beside CPU hogs, and up to 1.31× once in CI beside the other
// packages' tests; repairs not shared between the receivers (each
// receiver's 5 % sent again for it) would cost about 2×.
func TestLabImageRoom(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	needRoot(t)
	needTools(t, "losetup", "cmp", "timeout")
	const clients = 20
	const size = 1 << 30
	lab := netlab.New(t, netlab.Options{Clients: clients, Snooping: true})
	root := t.TempDir()
	raw := labDisk(t, t.TempDir(), 1, size, 96<<20)
	ix := labImage(t, raw, root, "room.img")
	stored := ix.FileSize()
	logs := labServer(t, lab, root, fmt.Sprintf(`[[mtftp.start]]
files = "images/*"
min_receivers = %d
max_wait = "90s"
`, clients))
	disks := make([]string, clients)
	for i := range disks {
		disks[i] = loopDisk(t, size)
	}
	for round, loss := range []int{0, 5} {
		if loss > 0 {
			if err := lab.Impair("all", "loss", strconv.Itoa(loss)); err != nil {
				t.Fatal(err)
			}
		}
		runs := make([]*deployRun, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The second round rewrites the disks: without
				// --no-resume they hold every chunk already. The disks
				// are sparse files, zeros already where the image has
				// holes (zeroing a loop device over tmpfs would write
				// zero pages: memory, not the point here).
				runs[i] = deploy(t, lab, i+1, "--verify", "--no-resume", "--assume-blank", netlab.ServerAddr, "images/room.img", disks[i])
			}()
		}
		wg.Wait()
		// Clean, every disk comes by multicast alone. At 5 % loss one
		// receiver may top up by unicast what its multicast left
		// missing (once in CI: 18 chunks of 135, the disk verified);
		// more would be a regression.
		toppedUp := 0
		for i, r := range runs {
			if r.err == nil && r.sum.Via == "multicast+tftp" && loss > 0 && toppedUp == 0 {
				toppedUp++
				t.Logf("loss %d%%: c%d topped up by TFTP: %s", loss, i+1, r.out)
				continue
			}
			if r.err != nil || r.sum.Via != "multicast" {
				t.Fatalf("loss %d%%: c%d: %v via %q\n%s", loss, i+1, r.err, r.sum.Via, r.out)
			}
		}
		for i := range 3 {
			sameAsRaw(t, raw, disks[i*7], size)
		}
		ss := sessions(t, logs, round+1)
		s := ss[len(ss)-1]
		ratio := float64(num(s, "wire_bytes")) / float64(stored)
		t.Logf("loss %d%%: %d receivers, %d completed in one session, wire %.3f× the %d-byte image (raw %d), %.1f s",
			loss, num(s, "receivers"), num(s, "completed"), ratio, stored, size, runs[0].sum.Seconds)
		if len(ss) != round+1 || num(s, "completed") != clients {
			t.Fatalf("loss %d%%: %d sessions, %d completed in the last, want one with %d", loss, len(ss), num(s, "completed"), clients)
		}
		if limit := []float64{1.05, 1.5}[round]; ratio > limit {
			t.Errorf("loss %d%%: wire %.3f× the stored size, want ≤ %.2f×", loss, ratio, limit)
		}
	}
}

// wchar reads the bytes a process has written (/proc/PID/io).
func wchar(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// TestLabImageResumeAndDelta: a deploy killed half way and started again
// fetches only what is missing (the stream: ≤ missing + 5 % of the image);
// a disk holding version 1 of an image fetches only what changed in
// version 2 (5 % of its chunks: ≤ 10 % of v2's stored size received, and
// on the wire).
func TestLabImageResumeAndDelta(t *testing.T) {
	testutil.Heavy(t) // docs/design.md, "Lab rules": heavy tests take turns
	needRoot(t)
	needTools(t, "losetup", "cmp", "timeout")
	const size = 256 << 20
	lab := netlab.New(t, netlab.Options{Clients: 2})
	root, work := t.TempDir(), t.TempDir()
	raw1 := labDisk(t, work, 2, size, 64<<20)
	v1 := labImage(t, raw1, root, "v1.img")
	// v2: 5 % of v1's data chunks changed.
	b, err := os.ReadFile(raw1)
	if err != nil {
		t.Fatal(err)
	}
	var data []int
	for i, e := range v1.Entries {
		if e.Kind != KindHole {
			data = append(data, i)
		}
	}
	r := rand.New(rand.NewPCG(3, 3))
	changed := len(data) / 20
	for _, k := range r.Perm(len(data))[:changed] {
		off, n := v1.RawSpan(data[k])
		for j := off; j < off+int64(n); j += 4096 {
			b[j] ^= 0x5a
		}
	}
	raw2 := filepath.Join(work, "v2.raw")
	if err := os.WriteFile(raw2, b, 0o644); err != nil {
		t.Fatal(err)
	}
	v2 := labImage(t, raw2, root, "v2.img")
	// 5 MB/s: a deploy takes long enough to be killed half way.
	logs := labServer(t, lab, root, "[mtftp]\nnative_rate_mbps = 40\nnative_settle = \"200ms\"\n")

	t.Run("resume", func(t *testing.T) {
		disk := loopDisk(t, size)
		var dataRaw int64
		for _, i := range data {
			_, n := v1.RawSpan(i)
			dataRaw += int64(n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := lab.Command(ctx, netlab.Client(1), testutil.Binary(t), "image", "deploy", "-q", "--timeout", "30s", netlab.ServerAddr, "images/v1.img", disk)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once about half the data is written (its write count,
		// holes zeroed by BLKZEROOUT write nothing).
		for deadline := time.Now().Add(2 * time.Minute); wchar(cmd.Process.Pid) < dataRaw/2; {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the first deploy did not get half way:\n%s", out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		before := len(sessions(t, logs, 1)) // its session ends once the killed receiver is dropped
		run := deploy(t, lab, 1, "--verify", netlab.ServerAddr, "images/v1.img", disk)
		if run.err != nil || run.sum.Via != "multicast" {
			t.Fatalf("resumed deploy: %v via %q\n%s", run.err, run.sum.Via, run.out)
		}
		sameAsRaw(t, raw1, disk, size)
		ss := sessions(t, logs, before+1)
		wire := num(ss[len(ss)-1], "wire_bytes")
		t.Logf("killed half way; the second deploy held %d chunks, fetched %d (%d stored bytes of %d); its stream sent %d bytes",
			run.sum.Held, run.sum.Fetched, run.sum.FetchedStored, v1.FileSize(), wire)
		if run.sum.Held == 0 || run.sum.Fetched == 0 {
			t.Fatalf("held %d, fetched %d: the first deploy should have written part of the image", run.sum.Held, run.sum.Fetched)
		}
		if limit := run.sum.FetchedStored + v1.FileSize()/20; wire > limit {
			t.Errorf("resumed stream sent %d bytes, want ≤ missing %d + 5 %% of %d", wire, run.sum.FetchedStored, v1.FileSize())
		}
	})

	t.Run("delta", func(t *testing.T) {
		disk := loopDisk(t, size)
		if run := deploy(t, lab, 2, "--unicast", "--http", "http://"+netlab.ServerAddr, netlab.ServerAddr, "images/v1.img", disk); run.err != nil {
			t.Fatalf("v1: %v\n%s", run.err, run.out)
		}
		before := len(sessions(t, logs, 0))
		run := deploy(t, lab, 2, "--verify", netlab.ServerAddr, "images/v2.img", disk)
		if run.err != nil || run.sum.Via != "multicast" {
			t.Fatalf("v2: %v via %q\n%s", run.err, run.sum.Via, run.out)
		}
		sameAsRaw(t, raw2, disk, size)
		ss := sessions(t, logs, before+1)
		wire := num(ss[len(ss)-1], "wire_bytes")
		t.Logf("v2 over v1: %d of %d data chunks changed; fetched %d chunks, %d stored bytes of %d (%.1f %%); stream %d bytes (%.1f %%)",
			changed, len(data), run.sum.Fetched, run.sum.FetchedStored, v2.FileSize(),
			100*float64(run.sum.FetchedStored)/float64(v2.FileSize()), wire, 100*float64(wire)/float64(v2.FileSize()))
		if run.sum.FetchedStored > v2.FileSize()/10 || wire > v2.FileSize()/10 {
			t.Errorf("delta received %d and streamed %d bytes, want both ≤ 10 %% of %d", run.sum.FetchedStored, wire, v2.FileSize())
		}
	})
}
