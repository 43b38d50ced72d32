package imaging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

var (
	mac1 = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	mac3 = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}
	via  = Via{HTTP: "http://192.0.2.1:8080", Server: "192.0.2.1:69"}
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) step(d time.Duration) { c.t = c.t.Add(d) }
func intp(n int) *int                 { return &n }
func deployTask(name string, macs ...net.HardwareAddr) Task {
	t := Task{Name: name, Action: "deploy", Image: "room.img"}
	for _, m := range macs {
		t.MACs = append(t.MACs, m.String())
	}
	return t
}

// newManager makes a manager over a temp imaging dir holding room.img.
func newManager(t *testing.T, c *clock, state string, tasks ...Task) *Manager {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "room.img"), []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Manager{Dir: dir, Prefix: "images", Kernel: "deploy/vmlinuz", Initrd: "deploy/deploy.cpio.gz", Cmdline: "console=ttyS0",
		MaxUnknown: 2, StateFile: state, Hosts: map[string]net.HardwareAddr{"pc03": mac3},
		Log: zerolog.New(zerolog.NewTestWriter(t)), Now: c.now}
	if err := m.Open(tasks); err != nil {
		t.Fatal(err)
	}
	return m
}

func tokenOf(t *testing.T, d Decision) string {
	t.Helper()
	for _, f := range strings.Fields(d.Cmdline) {
		if v, ok := strings.CutPrefix(f, "mtftpd.token="); ok {
			return v
		}
	}
	t.Fatalf("no token in %q", d.Cmdline)
	return ""
}

func TestDecideCmdline(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	m := newManager(t, c, "", deployTask("room", mac1))
	d := m.Decide(mac1, "pc01", false, via)
	tok := tokenOf(t, d)
	want := "mtftpd.http=http://192.0.2.1:8080 mtftpd.server=192.0.2.1:69 mtftpd.task=room mtftpd.token=" + tok +
		" mtftpd.mac=52:54:00:00:00:01 console=ttyS0"
	if d.Action != "deploy" || d.Task != "room" || d.Kernel != "deploy/vmlinuz" || d.Initrd != "deploy/deploy.cpio.gz" ||
		d.State != StateBooting || d.Cmdline != want || len(tok) != 32 {
		t.Fatalf("decision %+v\nwant cmdline %q", d, want)
	}
	// The same machine asking on another interface within the window:
	// the same attempt, pointed at that interface.
	other := Via{HTTP: "http://198.51.100.1", Server: "198.51.100.1:69"}
	d2 := m.Decide(mac1, "pc01", false, other)
	if tokenOf(t, d2) != tok || !strings.Contains(d2.Cmdline, "mtftpd.http=http://198.51.100.1 mtftpd.server=198.51.100.1:69") {
		t.Fatalf("second render: %+v", d2)
	}
	if d := m.Decide(mac2, "", false, via); d.Action != "local" || d.State != "" || d.Cmdline != "" {
		t.Fatalf("machine no task names: %+v", d)
	}
}

// TestDecideAttempts walks one machine through the attempt rules.
func TestDecideAttempts(t *testing.T) {
	type step struct {
		wait    time.Duration
		report  string // "" = a boot (Decide)
		action  string // Decide's action
		state   string // the machine's state after the step
		attempt int
		reason  string
	}
	cases := []struct {
		name    string
		retries int
		steps   []step
	}{
		{"renders within 60 s count once", 1, []step{
			{0, "", "deploy", StateBooting, 1, ""},
			{10 * time.Second, "", "deploy", StateBooting, 1, ""},
			{49 * time.Second, "", "deploy", StateBooting, 1, ""}, // 59 s after the hand-out
		}},
		{"booted without a result, then retries out", 1, []step{
			{0, "", "deploy", StateBooting, 1, ""},
			{2 * time.Minute, "", "deploy", StateBooting, 2, "booted the deploy environment without a result"},
			{2 * time.Minute, "", "local", StateFailed, 2, "booted the deploy environment without a result"},
			{time.Hour, "", "local", StateFailed, 2, ""},
		}},
		{"failed report goes back to pending, then done", 2, []step{
			{0, "", "deploy", StateBooting, 1, ""},
			{time.Minute, "receiving", "", StateReceiving, 1, ""},
			{time.Minute, "failed", "", StatePending, 1, "disk too small"},
			{time.Minute, "", "deploy", StateBooting, 2, "disk too small"},
			{time.Minute, "verifying", "", StateVerifying, 2, ""},
			{time.Minute, "done", "", StateDone, 2, ""},
			{time.Minute, "", "local", StateDone, 2, ""},
		}},
		{"no retries", 0, []step{
			{0, "", "deploy", StateBooting, 1, ""},
			{time.Minute, "failed", "", StateFailed, 1, "disk too small"},
			{time.Minute, "", "local", StateFailed, 1, ""},
		}},
		{"rebooted while receiving", 0, []step{
			{0, "", "deploy", StateBooting, 1, ""},
			{time.Minute, "receiving", "", StateReceiving, 1, ""},
			{time.Second, "", "local", StateFailed, 1, "network-booted again while receiving (10 of 100 bytes)"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{time.Unix(1e9, 0)}
			task := deployTask("room", mac1)
			task.Retries = intp(tc.retries)
			m := newManager(t, c, "", task)
			var tok string
			for i, s := range tc.steps {
				c.step(s.wait)
				if s.report == "" {
					d := m.Decide(mac1, "", false, via)
					if d.Action != s.action {
						t.Fatalf("step %d: action %s, want %s", i, d.Action, s.action)
					}
					if d.Action == "deploy" {
						tok = tokenOf(t, d)
					}
				} else if err := m.Report(Report{MAC: mac1.String(), Token: tok, State: s.report, Written: 10, Total: 100, Reason: "disk too small"}); err != nil {
					t.Fatalf("step %d: report: %v", i, err)
				}
				_, ms := m.Status()
				if len(ms) != 1 || ms[0].State != s.state || ms[0].Attempts != s.attempt || s.reason != "" && ms[0].Reason != s.reason {
					t.Fatalf("step %d: machine %+v, want state %s attempts %d reason %q", i, ms, s.state, s.attempt, s.reason)
				}
			}
		})
	}
}

func TestDecideMatching(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	byHost := deployTask("by-host")
	byHost.Hosts = []string{"pc03"}
	unknown := deployTask("rest")
	unknown.Unknown = true
	m := newManager(t, c, "", deployTask("explicit", mac1), byHost, unknown)
	if d := m.Decide(mac1, "", false, via); d.Task != "explicit" {
		t.Errorf("explicit MAC: %+v", d)
	}
	if d := m.Decide(mac3, "", true, via); d.Task != "by-host" {
		t.Errorf("host: %+v", d)
	}
	// A [[dhcp.host]] no task names is not unknown.
	if d := m.Decide(net.HardwareAddr{2, 0, 0, 0, 0, 9}, "", true, via); d.Action != "local" {
		t.Errorf("known machine taken by the unknown task: %+v", d)
	}
	// Unknown machines up to max_unknown (2), then local.
	for i, want := range []string{"deploy", "deploy", "local", "local"} {
		if d := m.Decide(net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, "", false, via); d.Action != want {
			t.Errorf("unknown machine %d: %+v, want %s", i, d, want)
		}
	}
	if d := m.Decide(net.HardwareAddr{2, 0, 0, 0, 1, 0}, "", false, via); d.Action != "deploy" {
		t.Errorf("an unknown machine with a record keeps it: %+v", d)
	}
	// Cancel: the machines get local, reports are stale.
	tok := tokenOf(t, m.Decide(mac1, "", false, via))
	if err := m.Cancel("explicit"); err != nil {
		t.Fatal(err)
	}
	c.step(time.Hour)
	if d := m.Decide(mac1, "", false, via); d.Action != "local" || d.State != StateCancelled {
		t.Errorf("after cancel: %+v", d)
	}
	if err := m.Report(Report{MAC: mac1.String(), Token: tok, State: "receiving"}); !errors.Is(err, ErrStale) {
		t.Errorf("report after cancel: %v, want ErrStale", err)
	}
	if err := m.Cancel("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("cancel of a missing task: %v", err)
	}
	// A new task may take a cancelled machine; not one in a running attempt.
	if err := m.AddTask(deployTask("again", mac1)); err != nil {
		t.Errorf("new task for a cancelled machine: %v", err)
	}
	if err := m.AddTask(deployTask("steal", mac3)); !errors.Is(err, ErrExists) {
		t.Errorf("task for a machine in a running attempt: %v, want ErrExists", err)
	}
	if err := m.AddTask(deployTask("again", mac2)); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: %v", err)
	}
	bad := deployTask("bad", mac2)
	bad.Image = "missing.img"
	if err := m.AddTask(bad); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "imaging.dir") {
		t.Errorf("missing image: %v, want it to name imaging.dir", err)
	}
}

// TestStateSurvivesRestart: a second manager over the same state file
// sees the tasks, machines and attempts of the first, and accepts the
// agent's token of the running attempt.
func TestStateSurvivesRestart(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	state := filepath.Join(t.TempDir(), "imaging.json")
	cfg := []Task{deployTask("room", mac1, mac2)}
	m := newManager(t, c, state, cfg...)
	tok := tokenOf(t, m.Decide(mac1, "pc01", false, via))
	m.Decide(mac2, "", false, via)
	if err := m.Report(Report{MAC: mac2.String(), Token: tokenOf(t, m.Decide(mac2, "", false, via)), State: "done"}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddTask(deployTask("runtime", mac3)); err != nil {
		t.Fatal(err)
	}
	m2 := &Manager{Dir: m.Dir, Prefix: "images", Kernel: m.Kernel, Initrd: m.Initrd, StateFile: state, Log: m.Log, Now: c.now}
	if err := m2.Open(cfg); err != nil {
		t.Fatal(err)
	}
	tasks, ms := m2.Status()
	if len(tasks) != 2 || len(ms) != 3 || ms[0].State != StateBooting || ms[0].Host != "pc01" || ms[1].State != StateDone || ms[2].Task != "runtime" {
		t.Fatalf("after restart: %+v\n%+v", tasks, ms)
	}
	if err := m2.Report(Report{MAC: mac1.String(), Token: tok, State: "receiving", Written: 5, Total: 10}); err != nil {
		t.Fatalf("token of the running attempt after restart: %v", err)
	}
	// The config dropped the task: it is cancelled, the runtime one stays.
	if err := m2.SetConfigTasks(nil); err != nil {
		t.Fatal(err)
	}
	if d := m2.Decide(mac1, "", false, via); d.Action != "local" || d.State != StateCancelled {
		t.Fatalf("task removed from the config: %+v", d)
	}
	if d := m2.Decide(mac3, "", false, via); d.Action != "deploy" {
		t.Fatalf("runtime task after a reload: %+v", d)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file %v %v: want mode 0600 (it holds tokens)", fi, err)
	}

	// A corrupt file: a clear error, the bytes moved aside, not lost.
	os.WriteFile(state, []byte(`{"version":1,"tasks":[{"name":"x"`), 0o600)
	m3 := &Manager{Dir: m.Dir, Kernel: m.Kernel, Initrd: m.Initrd, StateFile: state, Log: m.Log, Now: c.now}
	err := m3.Open(cfg)
	if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), state) {
		t.Fatalf("corrupt state: %v", err)
	}
	aside, _ := filepath.Glob(state + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("set aside: %v", aside)
	}
	if b, _ := os.ReadFile(aside[0]); string(b) != `{"version":1,"tasks":[{"name":"x"` {
		t.Fatalf("set-aside file holds %q", b)
	}
	if _, ms := m3.Status(); len(ms) != 2 || ms[0].State != StatePending {
		t.Fatalf("after a corrupt file: the config's tasks start over: %+v", ms)
	}
}

func do(t *testing.T, h http.Handler, method, url, auth string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, url, bytes.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", "Bearer "+auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAgentAPI(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	capt := Task{Name: "golden", Action: "capture", Image: "golden.img", MACs: []string{mac2.String()}}
	m := newManager(t, c, "", deployTask("room", mac1), capt)
	h := m.AgentHandler()
	if w := do(t, h, "GET", "/imaging/task?mac=52:54:00:00:00:01&token=x", "", nil); w.Code != 403 {
		t.Errorf("task before a hand-out: %d, want 403", w.Code)
	}
	tok := tokenOf(t, m.Decide(mac1, "", false, via))
	w := do(t, h, "GET", "/imaging/task?mac=52-54-00-00-00-01&token="+tok, "", nil)
	var task AgentTask
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &task) != nil {
		t.Fatalf("task: %d %s", w.Code, w.Body)
	}
	if task != (AgentTask{Task: "room", Action: "deploy", Image: "room.img", ImagePath: "images/room.img", After: "reboot", Verify: true, Server: "192.0.2.1:69"}) {
		t.Errorf("task %+v", task)
	}
	for _, tc := range []struct {
		url  string
		code int
	}{
		{"/imaging/task?mac=52:54:00:00:00:01&token=" + strings.Repeat("0", 32), 403},
		{"/imaging/task?mac=52:54:00:00:00:09&token=" + tok, 404},
		{"/imaging/task?mac=junk&token=" + tok, 400},
	} {
		if w := do(t, h, "GET", tc.url, "", nil); w.Code != tc.code {
			t.Errorf("%s: %d, want %d", tc.url, w.Code, tc.code)
		}
	}
	report := func(tok, state string, extra string) *httptest.ResponseRecorder {
		return do(t, h, "POST", "/imaging/report", "", []byte(`{"mac":"52:54:00:00:00:01","token":"`+tok+`","state":"`+state+`","written":10,"total":20`+extra+`}`))
	}
	if w := report(tok, "receiving", `,"phases":{"index":0.5}`); w.Code != 204 {
		t.Fatalf("report: %d %s", w.Code, w.Body)
	}
	if w := report(strings.Repeat("f", 32), "receiving", ""); w.Code != 403 {
		t.Errorf("wrong token: %d, want 403", w.Code)
	}
	if w := report(tok, "rebooting", ""); w.Code != 400 {
		t.Errorf("bad state: %d, want 400", w.Code)
	}
	if w := report(tok, "receiving", `,"phases":{"Index\n":1}`); w.Code != 400 {
		t.Errorf("bad phase name: %d, want 400", w.Code)
	}
	if w := report(tok, "receiving", `,"reason":"`+strings.Repeat("x", 5000)+`"`); w.Code != 413 {
		t.Errorf("body over 4 KiB: %d, want 413", w.Code)
	}
	if w := report(tok, "failed", `,"reason":"disk\u001b[2J gone"`); w.Code != 204 {
		t.Fatalf("failed: %d", w.Code)
	}
	if _, ms := m.Status(); ms[1].Reason != "disk?[2J gone" || ms[1].State != StatePending {
		t.Errorf("after failure: %+v", ms[1])
	}
	// The old attempt's token after a new hand-out: 409.
	c.step(time.Minute)
	tok2 := tokenOf(t, m.Decide(mac1, "", false, via))
	if w := report(tok, "receiving", ""); w.Code != 409 {
		t.Errorf("stale attempt: %d, want 409", w.Code)
	}
	if w := do(t, h, "GET", "/imaging/task?mac=52:54:00:00:00:01&token="+tok, "", nil); w.Code != 403 {
		t.Errorf("task with an earlier attempt's token: %d, want 403", w.Code)
	}
	if w := report(tok2, "done", ""); w.Code != 204 {
		t.Errorf("done: %d", w.Code)
	}
	if w := report(tok2, "done", ""); w.Code != 204 {
		t.Errorf("repeated done: %d, want 204", w.Code)
	}
	if w := report(tok2, "receiving", ""); w.Code != 409 {
		t.Errorf("progress after done: %d, want 409", w.Code)
	}
	if w := do(t, h, "GET", "/imaging/task?mac=52:54:00:00:00:01&token="+tok2, "", nil); w.Code != 404 {
		t.Errorf("task after done: %d, want 404", w.Code)
	}
	if got := metric(t, m, "mtftpd_imaging_bytes_written_total", ""); got != 20 {
		t.Errorf("bytes written %v, want 20", got)
	}
	if got := metric(t, m, "mtftpd_imaging_deploy_seconds", ""); got != 1 {
		t.Errorf("deploy_seconds holds %v deploys, want 1", got)
	}
	if got := metric(t, m, "mtftpd_imaging_machines", StateDone); got != 1 {
		t.Errorf("machines{state=done} = %v, want 1", got)
	}

	// Capture: the task's token is a bearer for its own image name only.
	ctok := tokenOf(t, m.Decide(mac2, "", false, via))
	w = do(t, h, "GET", "http://192.0.2.1:8080/imaging/task?mac=52:54:00:00:00:02&token="+ctok, "", nil)
	if json.Unmarshal(w.Body.Bytes(), &task) != nil || task.UploadURL != "http://192.0.2.1:8080/images/golden.img" || task.Action != "capture" {
		t.Errorf("capture task: %s", w.Body)
	}
	if !m.CaptureAllowed("golden.img", ctok) || m.CaptureAllowed("room.img", ctok) || m.CaptureAllowed("golden.img", tok2) {
		t.Errorf("CaptureAllowed: the token must open exactly its task's image")
	}
	srv := &Server{Dir: m.Dir, Prefix: "/images/", TaskToken: m.CaptureAllowed, Log: m.Log}
	if w := do(t, srv, "PUT", "/images/room.img", ctok, []byte("x")); w.Code != 401 {
		t.Errorf("capture of another name with a task token: %d, want 401", w.Code)
	}
	if w := do(t, srv, "PUT", "/images/golden.img", ctok, []byte("not a stream")); w.Code != 400 {
		t.Errorf("capture with the task token: %d, want 400 (past the token check, a bad stream)", w.Code)
	}
}

// metric reads one metric's value from the manager's collector.
func metric(t *testing.T, m *Manager, name, state string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	m.Collector().Collect(ch)
	close(ch)
	for x := range ch {
		var d dto.Metric
		if !strings.Contains(x.Desc().String(), `"`+name+`"`) || x.Write(&d) != nil {
			continue
		}
		if state != "" && (len(d.Label) != 1 || d.Label[0].GetValue() != state) {
			continue
		}
		switch {
		case d.Counter != nil:
			return d.Counter.GetValue()
		case d.Gauge != nil:
			return d.Gauge.GetValue()
		case d.Histogram != nil:
			return float64(d.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s %s", name, state)
	return 0
}

func TestAdminAPI(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	m := newManager(t, c, "")
	const admin = "0123456789abcdef0123"
	h := m.AdminHandler(admin, func() []Session { return []Session{{Dialect: "native", File: "images/room.img", Receivers: 3}} })
	body, _ := json.Marshal(deployTask("room", mac1))
	for _, tc := range []struct {
		auth string
		code int
	}{{"", 401}, {"wrong", 401}, {admin + "x", 401}} {
		if w := do(t, h, "POST", "/api/imaging/tasks", tc.auth, body); w.Code != tc.code {
			t.Errorf("auth %q: %d, want %d", tc.auth, w.Code, tc.code)
		}
	}
	if w := do(t, m.AdminHandler("", nil), "POST", "/api/imaging/tasks", "", body); w.Code != 403 {
		t.Errorf("no admin token configured: %d, want 403", w.Code)
	}
	if w := do(t, h, "POST", "/api/imaging/tasks", admin, body); w.Code != 201 {
		t.Fatalf("add: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "POST", "/api/imaging/tasks", admin, []byte(`{"name":"x","action":"deploy","image":"room.img","macs":["52:54:00:00:00:05"],"aftr":"reboot"}`)); w.Code != 400 || !strings.Contains(w.Body.String(), "aftr") {
		t.Errorf("unknown field: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "POST", "/api/imaging/tasks", admin, []byte(`{"name":"x","action":"deploy","image":"room.img","after":"halt","macs":["52:54:00:00:00:05"]}`)); w.Code != 400 || !strings.Contains(w.Body.String(), "after") {
		t.Errorf("bad after: %d %s", w.Code, w.Body)
	}
	m.Decide(mac1, "pc01", false, via)
	w := do(t, h, "GET", "/api/imaging", "", nil)
	var o Overview
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &o) != nil || len(o.Tasks) != 1 || len(o.Machines) != 1 || len(o.Sessions) != 1 ||
		o.Machines[0].State != StateBooting || o.Tasks[0].Source != "api" || o.Tasks[0].Machines[StateBooting] != 1 {
		t.Fatalf("overview: %d %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), "token") {
		t.Errorf("the overview shows a token: %s", w.Body)
	}
	if w := do(t, h, "DELETE", "/api/imaging/tasks/room", "", nil); w.Code != 401 {
		t.Errorf("delete without token: %d", w.Code)
	}
	if w := do(t, h, "DELETE", "/api/imaging/tasks/room", admin, nil); w.Code != 204 {
		t.Errorf("delete: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "DELETE", "/api/imaging/tasks/none", admin, nil); w.Code != 404 {
		t.Errorf("delete of a missing task: %d", w.Code)
	}
}

// FuzzReport: any body to POST /imaging/report gets 204, 400, 403, 404,
// 409 or 413, never a 500 or a panic, and never changes a machine
// without its current token.
func FuzzReport(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:00:00:01","token":"x","state":"receiving","written":1,"total":2,"phases":{"index":1}}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:02","state":"done","reason":"\u0000"}`))
	f.Add([]byte(`{"phases":{"a":1e400}}`))
	c := &clock{time.Unix(1e9, 0)}
	m := &Manager{Dir: f.TempDir(), Kernel: "k", Initrd: "i", Now: c.now}
	os.WriteFile(filepath.Join(m.Dir, "room.img"), []byte("x"), 0o644)
	if err := m.Open([]Task{deployTask("room", mac1, mac2)}); err != nil {
		f.Fatal(err)
	}
	m.Decide(mac2, "", false, via)
	h := m.AgentHandler()
	f.Fuzz(func(t *testing.T, body []byte) {
		_, before := m.Status()
		r := httptest.NewRequest("POST", "/imaging/report", bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 204, 400, 403, 404, 409, 413:
		default:
			t.Fatalf("%q: %d %s", body, w.Code, w.Body)
		}
		if _, after := m.Status(); w.Code != 204 && !equalMachines(before, after) {
			t.Fatalf("%q: refused (%d) but changed %+v to %+v", body, w.Code, before, after)
		}
	})
}

func equalMachines(a, b []MachineStatus) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestHostileRenderDoesNotRedirectAgent: anyone on the LAN can render a
// machine's boot config, with a Host header of their choosing, and so
// make its hand-out. The machine's agent must still be told to upload
// (capture) and to fetch (server) where its own request went, not where
// the attacker's render pointed.
func TestHostileRenderDoesNotRedirectAgent(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	capt := Task{Name: "golden", Action: "capture", Image: "golden.img", MACs: []string{mac2.String()}}
	m := newManager(t, c, "", capt)
	m.TFTPPort = "69"
	// The attacker renders first (Host: evil), the victim within the window.
	evil := Via{HTTP: "http://198.51.100.66:8080", Server: "198.51.100.66:69"}
	tok := tokenOf(t, m.Decide(mac2, "", false, evil))
	if tokenOf(t, m.Decide(mac2, "", false, via)) != tok {
		t.Fatal("a render within the window must repeat the hand-out")
	}
	r := httptest.NewRequest("GET", "http://192.0.2.1:8080/imaging/task?mac=52:54:00:00:00:02&token="+tok, nil)
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 8080}))
	w := httptest.NewRecorder()
	m.AgentHandler().ServeHTTP(w, r)
	var task AgentTask
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &task) != nil {
		t.Fatalf("task: %d %s", w.Code, w.Body)
	}
	if task.UploadURL != "http://192.0.2.1:8080/images/golden.img" || task.Server != "192.0.2.1:69" {
		t.Errorf("upload_url %q, server %q: want the agent's own server, not the attacker's", task.UploadURL, task.Server)
	}
}

// TestReportStateOnlyForward: a token holder alternating receiving and
// verifying must not make each report a state file write.
func TestReportStateOnlyForward(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	state := filepath.Join(t.TempDir(), "imaging.json")
	m := newManager(t, c, state, deployTask("room", mac1))
	tok := tokenOf(t, m.Decide(mac1, "", false, via))
	for _, st := range []string{StateReceiving, StateVerifying} {
		if err := m.Report(Report{MAC: mac1.String(), Token: tok, State: st, Written: 1, Total: 2}); err != nil {
			t.Fatal(err)
		}
	}
	// Removed: any write from here on brings it back.
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		st := []string{StateReceiving, StateVerifying}[i%2]
		if err := m.Report(Report{MAC: mac1.String(), Token: tok, State: st, Written: 2, Total: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("the state file was rewritten by receiving/verifying flips")
	}
	if _, ms := m.Status(); ms[0].State != StateVerifying {
		t.Errorf("state %s, want verifying", ms[0].State)
	}
}

// TestCaptureNeverReplacesAServedImage: a capture task's token (which
// anyone on the LAN can learn by rendering its machine's boot config)
// must not open an image that a deploy task still serves; and such a
// capture task is refused when added.
func TestCaptureNeverReplacesAServedImage(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	// From the config both are taken; the upload is what must refuse.
	capt := Task{Name: "recapture", Action: "capture", Image: "room.img", MACs: []string{mac2.String()}}
	m := newManager(t, c, "", deployTask("room", mac1), capt)
	ctok := tokenOf(t, m.Decide(mac2, "", false, via))
	if m.CaptureAllowed("room.img", ctok) {
		t.Errorf("a capture token opened room.img while task room still deploys it")
	}
	srv := &Server{Dir: m.Dir, Prefix: "/images/", TaskToken: m.CaptureAllowed, Log: m.Log}
	if w := do(t, srv, "PUT", "/images/room.img", ctok, []byte("x")); w.Code != 401 {
		t.Errorf("capture over a served image: %d, want 401", w.Code)
	}
	// Once the deploy is done with its machines, the capture may go on.
	tok := tokenOf(t, m.Decide(mac1, "", false, via))
	if err := m.Report(Report{MAC: mac1.String(), Token: tok, State: StateDone}); err != nil {
		t.Fatal(err)
	}
	if !m.CaptureAllowed("room.img", ctok) {
		t.Errorf("capture refused after the deploy task finished")
	}
	// Over the API: a deploy of an image a capture task is writing, and a
	// capture of an image a deploy task serves, are 409.
	if err := m.AddTask(deployTask("room2", mac3)); !errors.Is(err, ErrExists) {
		t.Errorf("deploy task of an image being captured: %v, want ErrExists", err)
	}
	if err := m.Cancel("recapture"); err != nil {
		t.Fatal(err)
	}
	if err := m.AddTask(deployTask("room2", mac3)); err != nil {
		t.Fatal(err)
	}
	err := m.AddTask(Task{Name: "cap2", Action: "capture", Image: "room.img", MACs: []string{"52:54:00:00:00:07"}})
	if !errors.Is(err, ErrExists) {
		t.Errorf("capture task over a served image: %v, want ErrExists", err)
	}
}

// TestRefusalsLogLimited: a flood of forged reports, admin requests and
// uploads logs a line per kind per 10 s, not one per request.
func TestRefusalsLogLimited(t *testing.T) {
	c := &clock{time.Unix(1e9, 0)}
	m := newManager(t, c, "", deployTask("room", mac1))
	var logs bytes.Buffer
	m.Log = zerolog.New(&logs)
	tokenOf(t, m.Decide(mac1, "", false, via))
	h, admin := m.AgentHandler(), m.AdminHandler("secret", nil)
	srv := &Server{Dir: m.Dir, Prefix: "/images/", TaskToken: m.CaptureAllowed, Log: m.Log}
	const flood = 200
	for range flood {
		if w := do(t, h, "POST", "/imaging/report", "", []byte(`{"mac":"52:54:00:00:00:01","token":"x","state":"receiving"}`)); w.Code != 403 {
			t.Fatalf("forged report: %d", w.Code)
		}
		if w := do(t, admin, "DELETE", "/api/imaging/tasks/room", "wrong", nil); w.Code != 401 {
			t.Fatalf("forged admin request: %d", w.Code)
		}
		if w := do(t, srv, "PUT", "/images/room.img", "wrong", nil); w.Code != 401 {
			t.Fatalf("forged upload: %d", w.Code)
		}
	}
	// A line per kind per 10 s: a few at most however slow the machine.
	if n := strings.Count(logs.String(), "\n"); n > 3*5 {
		t.Errorf("%d forged requests of 3 kinds logged %d lines, want at most 15", 3*flood, n)
	}
}
