package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/image"
)

const (
	testMAC   = "52:54:00:12:34:56"
	testToken = "0123456789abcdef0123456789abcdef"
)

// fakeServer plays the mirror's agent API (docs/imaging.md) and serves
// the image files under dir.
type fakeServer struct {
	t        *testing.T
	dir      string
	task     Task
	taskCode []int // status codes answered before the task (503 to test retries)

	mu       sync.Mutex
	gets     int
	reports  []Report
	captured *image.Index
	auth     string
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/imaging/task":
		f.mu.Lock()
		f.gets++
		var code int
		if len(f.taskCode) > 0 {
			code, f.taskCode = f.taskCode[0], f.taskCode[1:]
		}
		f.mu.Unlock()
		if r.URL.Query().Get("mac") != testMAC || r.URL.Query().Get("token") != testToken {
			http.Error(w, "bad token", http.StatusForbidden)
			return
		}
		if code != 0 {
			w.WriteHeader(code)
			return
		}
		json.NewEncoder(w).Encode(f.task)
	case r.URL.Path == "/imaging/report" && r.Method == http.MethodPost:
		var rep Report
		b, _ := readAll(r, 4<<10)
		if err := json.Unmarshal(b, &rep); err != nil || len(b) > 4<<10 {
			f.t.Errorf("report %q: %v", b, err)
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		if rep.MAC != testMAC || rep.Token != testToken {
			http.Error(w, "bad token", http.StatusForbidden)
			return
		}
		f.mu.Lock()
		f.reports = append(f.reports, rep)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut:
		f.mu.Lock()
		f.auth = r.Header.Get("Authorization")
		f.mu.Unlock()
		out, err := os.Create(filepath.Join(f.dir, "captured.img"))
		if err != nil {
			f.t.Error(err)
			return
		}
		defer out.Close()
		ix, err := image.ReceiveStream(r.Body, out, 1<<30)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.captured = ix
		f.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"ok":true}`))
	default:
		http.ServeFile(w, r, filepath.Join(f.dir, filepath.FromSlash(r.URL.Path)))
	}
}

func readAll(r *http.Request, n int64) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(http.MaxBytesReader(nil, r.Body, n+1))
	return b.Bytes(), err
}

func (f *fakeServer) last() Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reports) == 0 {
		return Report{}
	}
	return f.reports[len(f.reports)-1]
}

// makeImage writes a raw disk of rawSize (random data with a hole) and
// its image under dir/images/room.img.
func makeImage(t *testing.T, dir string, rawSize int) []byte {
	t.Helper()
	raw := make([]byte, rawSize)
	rand.Read(raw[:rawSize/3])
	rand.Read(raw[rawSize*2/3:])
	rawPath := filepath.Join(t.TempDir(), "golden.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src, err := image.OpenSource(ctx, rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	os.MkdirAll(filepath.Join(dir, "images"), 0o755)
	if _, err := image.WriteFile(ctx, src, filepath.Join(dir, "images", "room.img"), image.Meta{}, image.CreateOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	return raw
}

type testRun struct {
	srv    *fakeServer
	env    Env
	out    *syncBuffer
	afters []string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestRun(t *testing.T, task Task, disks map[string]int64) *testRun {
	tr := &testRun{srv: &fakeServer{t: t, dir: t.TempDir(), task: task}, out: &syncBuffer{}}
	hs := httptest.NewServer(tr.srv)
	t.Cleanup(hs.Close)
	tr.env = Env{
		Cmdline:     "console=ttyS0 mtftpd.http=" + hs.URL + " mtftpd.task=" + task.Task + " mtftpd.token=" + testToken + " BOOTIF=01-" + strings.ReplaceAll(testMAC, ":", "-"),
		SysRoot:     fakeSys(t, disks),
		DevRoot:     t.TempDir(),
		Out:         tr.out,
		After:       func(a string) { tr.afters = append(tr.afters, a) },
		ReportEvery: 5 * time.Millisecond,
		RetryDelay:  time.Millisecond,
	}
	return tr
}

func TestRunDeploy(t *testing.T) {
	task := Task{Task: "room-101", Action: "deploy", Image: "room.img", ImagePath: "images/room.img", After: "reboot", Verify: true}
	tr := newTestRun(t, task, map[string]int64{"loop0": 1 << 30, "vda": 64 << 10, "vdb": 4 << 20})
	raw := makeImage(t, tr.srv.dir, 1<<20+4096)
	tr.srv.taskCode = []int{http.StatusServiceUnavailable, http.StatusBadGateway} // the mirror is starting
	if err := Run(context.Background(), tr.env); err != nil {
		t.Fatalf("Run: %v\n%s", err, tr.out)
	}
	got, err := os.ReadFile(filepath.Join(tr.env.DevRoot, "vdb"))
	if err != nil || !bytes.Equal(got[:len(raw)], raw) {
		t.Fatalf("vdb does not hold the image (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(tr.env.DevRoot, "vda")); err == nil {
		t.Errorf("vda (64 KiB, too small) was written")
	}
	last := tr.srv.last()
	if last.State != StateDone || last.Written != int64(len(raw)) || last.Total != int64(len(raw)) {
		t.Errorf("last report %+v, want done %d/%d", last, len(raw), len(raw))
	}
	for _, p := range []string{"index", "receive", "sync", "verify"} {
		if _, ok := last.Phases[p]; !ok {
			t.Errorf("phase %s missing from %v", p, last.Phases)
		}
	}
	for _, r := range tr.srv.reports[:len(tr.srv.reports)-1] {
		if r.State != StateReceiving && r.State != StateVerifying {
			t.Errorf("progress report %+v", r)
		}
	}
	if tr.srv.gets != 3 {
		t.Errorf("%d task GETs, want 3 (two 5xx, then the task)", tr.srv.gets)
	}
	if len(tr.afters) != 1 || tr.afters[0] != AfterReboot {
		t.Errorf("after actions %q", tr.afters)
	}
	out := tr.out.String()
	for _, want := range []string{
		Prefix + "task room-101 deploy room.img -> " + filepath.Join(tr.env.DevRoot, "vdb") + "\n",
		Prefix + "done in ",
		Prefix + "rebooting\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
}

// TestRunDiskTooSmall: no disk fits; the failure is reported with the
// reason and the task's after action still happens.
func TestRunDiskTooSmall(t *testing.T) {
	task := Task{Task: "room-101", Action: "deploy", Image: "room.img", ImagePath: "images/room.img", After: "poweroff"}
	tr := newTestRun(t, task, map[string]int64{"vda": 64 << 10, "sr0": 1 << 30})
	makeImage(t, tr.srv.dir, 1<<20)
	err := Run(context.Background(), tr.env)
	const reason = "no disk large enough for room.img (1.0 MiB): vda 64 KiB"
	if !errors.Is(err, ErrNoDisk) || err.Error() != reason {
		t.Fatalf("Run: %v, want %q", err, reason)
	}
	if last := tr.srv.last(); last.State != StateFailed || last.Reason != reason {
		t.Errorf("last report %+v", last)
	}
	if len(tr.afters) != 1 || tr.afters[0] != AfterPoweroff {
		t.Errorf("after actions %q", tr.afters)
	}
	if !strings.Contains(tr.out.String(), Prefix+"failed: "+reason+"\n") {
		t.Errorf("console:\n%s", tr.out)
	}
}

// TestRunNoTask: a 404 is not tried again; the agent reboots.
func TestRunNoTask(t *testing.T) {
	tr := newTestRun(t, Task{}, map[string]int64{"vda": 1 << 30})
	tr.srv.taskCode = []int{http.StatusNotFound}
	if err := Run(context.Background(), tr.env); !errors.Is(err, ErrNoTask) {
		t.Fatalf("Run: %v", err)
	}
	if tr.srv.gets != 1 || len(tr.afters) != 1 || tr.afters[0] != AfterReboot {
		t.Errorf("%d GETs, afters %q", tr.srv.gets, tr.afters)
	}
}

// TestRunUnreachable: a mirror that never answers ends after the bounded
// tries, and the agent reboots.
func TestRunUnreachable(t *testing.T) {
	tr := newTestRun(t, Task{}, nil)
	tr.env.Cmdline = "mtftpd.http=http://127.0.0.1:1 mtftpd.token=" + testToken + " mtftpd.mac=" + testMAC
	err := Run(context.Background(), tr.env)
	if err == nil || !strings.Contains(err.Error(), "/imaging/task") {
		t.Fatalf("Run: %v", err)
	}
	if n := strings.Count(tr.out.String(), Prefix+"task: "); n != taskTries-1 {
		t.Errorf("%d retries printed, want %d:\n%s", n, taskTries-1, tr.out)
	}
	if len(tr.afters) != 1 || tr.afters[0] != AfterReboot {
		t.Errorf("afters %q", tr.afters)
	}
}

// TestRunBadCmdline: nothing to talk to; reboot.
func TestRunBadCmdline(t *testing.T) {
	tr := newTestRun(t, Task{}, nil)
	tr.env.Cmdline = "console=ttyS0"
	if err := Run(context.Background(), tr.env); !errors.Is(err, ErrCmdline) {
		t.Fatalf("Run: %v", err)
	}
	if len(tr.afters) != 1 || tr.afters[0] != AfterReboot || tr.srv.gets != 0 {
		t.Errorf("afters %q, %d GETs", tr.afters, tr.srv.gets)
	}
}

// TestRunCapture images the first disk and PUTs it with the machine's
// token; the server's stream reader accepts it.
func TestRunCapture(t *testing.T) {
	tr := newTestRun(t, Task{}, map[string]int64{"sda": 2 << 20})
	hs := httptest.NewServer(tr.srv) // for the upload URL
	t.Cleanup(hs.Close)
	tr.srv.task = Task{Task: "cap", Action: "capture", Image: "golden.img", ImagePath: "images/golden.img", After: "wait", UploadURL: hs.URL + "/images/golden.img"}
	disk := make([]byte, 2<<20)
	rand.Read(disk[:100<<10])
	os.WriteFile(filepath.Join(tr.env.DevRoot, "sda"), disk, 0o644)
	if err := Run(context.Background(), tr.env); err != nil {
		t.Fatalf("Run: %v\n%s", err, tr.out)
	}
	if tr.srv.captured == nil || tr.srv.captured.Header.RawSize != uint64(len(disk)) {
		t.Fatalf("captured %+v", tr.srv.captured)
	}
	if tr.srv.auth != "Bearer "+testToken {
		t.Errorf("Authorization %q", tr.srv.auth)
	}
	if want := fmt.Sprintf("image_digest %x)", tr.srv.captured.Header.ImageDigest[:]); !strings.Contains(tr.out.String(), want) {
		t.Errorf("console lacks %q (the admin compares it with the server's log):\n%s", want, tr.out)
	}
	if last := tr.srv.last(); last.State != StateDone || last.Total != int64(len(disk)) {
		t.Errorf("last report %+v", last)
	}
	if len(tr.afters) != 1 || tr.afters[0] != AfterWait {
		t.Errorf("afters %q", tr.afters)
	}
}

// TestRunRefusesForeignDisk: a task (from a rogue server on the LAN)
// naming something that is not a block device under /dev is refused
// before anything is read or written, and the failure is reported.
func TestRunRefusesForeignDisk(t *testing.T) {
	// Paths a regression would write stay in the test's temp dir.
	tmp := filepath.Join(t.TempDir(), "x")
	for _, disk := range []string{"/dev/null", "/dev/.." + tmp, tmp} {
		for _, action := range []string{"deploy", "capture"} {
			task := Task{Task: "room-101", Action: action, Image: "room.img", ImagePath: "images/room.img", Disk: disk,
				After: "poweroff", UploadURL: "http://127.0.0.1:9/images/x.img"}
			tr := newTestRun(t, task, map[string]int64{"vda": 4 << 20})
			makeImage(t, tr.srv.dir, 1<<20)
			err := Run(context.Background(), tr.env)
			if err == nil || !strings.Contains(err.Error(), disk) {
				t.Errorf("%s to %s: %v, want a refusal naming the disk", action, disk, err)
			}
			if last := tr.srv.last(); last.State != StateFailed {
				t.Errorf("%s to %s: last report %+v, want failed", action, disk, last)
			}
		}
	}
}
