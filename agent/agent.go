// Package agent is the imaging agent: the program the deploy environment
// runs as /init (docs/imaging.md, "Agent"). It brings up the NIC the
// machine booted from, fetches its task from the mirror, deploys an image
// to a disk (or captures the disk), reports progress and the result, and
// reboots, powers off or waits as the task says.
//
// It must never loop or wait without bound, except when the task says
// "wait": every failure is reported (best effort, a bounded number of
// tries) and then ends in the task's after action (reboot by default).
// It writes to one disk only: the task's, or the first whole disk large
// enough for the image.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mtftpd/mtftpd/imaging/wire"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/image"
	"github.com/mtftpd/mtftpd/mtftp"
)

// Prefix starts every console line of the agent (the end-to-end test
// greps the serial console for it).
const Prefix = "mtftpd-agent: "

// After actions (the task's "after") and report states: the agent API's
// (imaging/wire).
const (
	AfterReboot   = wire.AfterReboot
	AfterPoweroff = wire.AfterPoweroff
	AfterWait     = wire.AfterWait

	StateReceiving = wire.StateReceiving
	StateVerifying = wire.StateVerifying
	StateDone      = wire.StateDone
	StateFailed    = wire.StateFailed
)

// Task is GET /imaging/task's answer; Report is POST /imaging/report's
// body (imaging/wire, shared with the server).
type (
	Task   = wire.Task
	Report = wire.Report
)

// Env is everything the agent takes from the machine, so that Run can be
// tested without root: the command line's text, where sysfs and /dev
// are, the HTTP client, and the hooks that touch the machine.
type Env struct {
	// Cmdline is /proc/cmdline's text.
	Cmdline string
	// SysRoot is where sysfs is mounted ("/sys"): disks are read from
	// SysRoot/block.
	SysRoot string
	// DevRoot holds the disks' device nodes ("/dev").
	DevRoot string
	// Client talks to the mirror; nil = one with connect and header
	// timeouts (and no overall one: a capture streams for minutes).
	Client *http.Client
	// Out is the console.
	Out io.Writer
	// Log receives the image package's events; zero = none.
	Log zerolog.Logger
	// Version is this binary's version (recorded in a captured image).
	Version string
	// Net brings up the network: the NIC with mac (nil: the first one
	// with a carrier), an address by DHCP. It returns the NIC's name and
	// address. nil: the network is up already (tests, `mtftpd agent
	// --no-net`); the MAC must then be on the command line.
	Net func(ctx context.Context, mac net.HardwareAddr) (iface string, hw net.HardwareAddr, err error)
	// Deploy runs a deploy; nil = d.Deploy.
	Deploy func(ctx context.Context, d *image.Deployer) (image.DeployResult, error)
	// After does the final action (reboot, poweroff, wait); nil = none.
	After func(action string)
	// ReportEvery is the progress report interval; 0 = 2 s.
	ReportEvery time.Duration
	// RetryDelay is the first pause between tries of a failed task fetch
	// or report (it doubles, up to 8×); 0 = 1 s.
	RetryDelay time.Duration
}

// Tries of the task fetch and of a final report: with the 1 s first
// delay doubling to 8 s, about a minute for the task (the mirror may be
// restarting) and half a minute for a report.
const (
	taskTries   = 10
	reportTries = 6
)

// maxReason keeps a report under the server's 4 KiB body cap
// (docs/imaging.md).
const maxReason = 2048

// ErrNoTask: the server has no task for this machine (404).
var ErrNoTask = errors.New("agent: no task for this machine")

// ErrTokenRefused: the server refused the token (403): a newer boot of the
// machine holds the task, or the task changed.
var ErrTokenRefused = errors.New("agent: the server refused the token")

// ErrAttemptOver: the server answered a report with 409: this attempt is
// no longer the machine's (cancelled, or retried elsewhere).
var ErrAttemptOver = errors.New("agent: the server ended this attempt")

// Run is the agent: it returns the error that failed the attempt (nil when
// it succeeded) after calling env.After with the action taken.
func Run(ctx context.Context, env Env) error {
	a := &run{env: env, start: time.Now()}
	a.defaults()
	err := a.do(ctx)
	after := AfterReboot
	if a.task.After != "" {
		after = a.task.After
	}
	if err != nil {
		a.printf("failed: %v", err)
		if a.reportable() && !errors.Is(err, ErrTokenRefused) && !errors.Is(err, ErrAttemptOver) {
			reason := err.Error()
			if len(reason) > maxReason {
				reason = reason[:maxReason] + "…"
			}
			if rerr := a.final(ctx, Report{State: StateFailed, Reason: reason}); rerr != nil {
				a.printf("could not report the failure: %v", rerr)
			}
		}
	}
	switch after {
	case AfterReboot:
		a.printf("rebooting")
	case AfterPoweroff:
		a.printf("powering off")
	case AfterWait:
		a.printf("waiting (the task says wait)")
	}
	if env.After != nil {
		env.After(after)
	}
	return err
}

type run struct {
	env   Env
	start time.Time
	cl    Cmdline
	mac   net.HardwareAddr
	iface string
	task  Task
}

func (a *run) defaults() {
	if a.env.Out == nil {
		a.env.Out = io.Discard
	}
	if a.env.SysRoot == "" {
		a.env.SysRoot = "/sys"
	}
	if a.env.DevRoot == "" {
		a.env.DevRoot = "/dev"
	}
	if a.env.Client == nil {
		a.env.Client = newClient()
	}
	if a.env.ReportEvery <= 0 {
		a.env.ReportEvery = 2 * time.Second
	}
	if a.env.RetryDelay <= 0 {
		a.env.RetryDelay = time.Second
	}
}

// newClient bounds connecting and waiting for an answer's header; a body
// may take as long as it streams.
func newClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext:           d.DialContext,
		ResponseHeaderTimeout: 30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
	}}
}

func (a *run) printf(format string, args ...any) {
	fmt.Fprintf(a.env.Out, Prefix+format+"\n", args...)
}

func (a *run) reportable() bool { return a.cl.HTTP != "" && a.cl.Token != "" && a.mac != nil }

// cmdlineTask is the deploy a command line names without a server task:
// verified, multicast from mtftpd.server when given, else HTTP.
func cmdlineTask(cl Cmdline) Task {
	return Task{Task: "cmdline", Action: "deploy", Image: path.Base(cl.Image), ImagePath: cl.Image, Disk: cl.Disk,
		After: cl.After, Verify: true, Server: cl.Server}
}

func (a *run) do(ctx context.Context) error {
	cl, err := ParseCmdline(a.env.Cmdline)
	a.cl = cl
	if err != nil {
		return err
	}
	a.mac = cl.MAC
	if a.env.Net != nil {
		iface, hw, err := a.env.Net(ctx, cl.MAC)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		a.iface = iface
		if a.mac == nil {
			a.mac = hw
		}
	}
	if a.mac == nil {
		return fmt.Errorf("%w: no mtftpd.mac= or BOOTIF=, and no NIC chosen", ErrCmdline)
	}
	if cl.Image != "" {
		a.task = cmdlineTask(cl)
		a.printf("task from the command line: deploy %s -> %s (nothing is reported)", cl.Image, cl.Disk)
	} else if a.task, err = a.fetchTask(ctx); err != nil {
		return err
	}
	if a.task.After != AfterReboot && a.task.After != AfterPoweroff && a.task.After != AfterWait {
		bad := a.task.After
		a.task.After = ""
		if bad != "" {
			return fmt.Errorf("agent: task %s: after %q is none of reboot, poweroff, wait", a.task.Task, bad)
		}
	}
	if err := checkDisk(a.task.Disk); err != nil {
		return fmt.Errorf("agent: task %s: %w", a.task.Task, err)
	}
	switch a.task.Action {
	case "deploy":
		return a.deploy(ctx)
	case "capture":
		return a.capture(ctx)
	}
	return fmt.Errorf("agent: task %s: action %q is neither deploy nor capture", a.task.Task, a.task.Action)
}

// fetchTask asks the mirror for this machine's task, trying again on a
// network error or a 5xx (the mirror may be starting).
func (a *run) fetchTask(ctx context.Context) (Task, error) {
	q := url.Values{"mac": {a.mac.String()}, "token": {a.cl.Token}}
	u := a.cl.HTTP + "/imaging/task?" + q.Encode()
	var t Task
	err := a.retry(ctx, taskTries, "task", func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return false, err
		}
		resp, err := a.env.Client.Do(req)
		if err != nil {
			return true, fmt.Errorf("GET %s/imaging/task: %w", a.cl.HTTP, unwrapURL(err))
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return false, fmt.Errorf("%w (%s)", ErrNoTask, a.mac)
		case resp.StatusCode == http.StatusForbidden:
			return false, fmt.Errorf("%w (403): a newer boot of %s holds the task", ErrTokenRefused, a.mac)
		case resp.StatusCode >= 500:
			return true, fmt.Errorf("GET %s/imaging/task: %s", a.cl.HTTP, resp.Status)
		case resp.StatusCode != http.StatusOK:
			return false, fmt.Errorf("GET %s/imaging/task: %s: %.200s", a.cl.HTTP, resp.Status, body)
		case err != nil:
			return true, fmt.Errorf("GET %s/imaging/task: %w", a.cl.HTTP, err)
		}
		t = Task{}
		if err := json.Unmarshal(body, &t); err != nil {
			return false, fmt.Errorf("GET %s/imaging/task: %w", a.cl.HTTP, err)
		}
		return false, nil
	})
	return t, err
}

// retry calls f up to tries times while it says the error is temporary,
// pausing RetryDelay, then twice that, up to 8×.
func (a *run) retry(ctx context.Context, tries int, what string, f func() (again bool, err error)) error {
	delay := a.env.RetryDelay
	for i := 1; ; i++ {
		again, err := f()
		if err == nil || !again || i == tries {
			return err
		}
		a.printf("%s: %v (try %d of %d)", what, err, i, tries)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(delay*2, 8*a.env.RetryDelay)
	}
}

// post sends one report; a 403 or 409 maps to the errors that end the
// attempt.
func (a *run) post(ctx context.Context, r Report) (again bool, err error) {
	if !a.reportable() {
		return false, nil // a command-line task: no server task to report to
	}
	r.MAC, r.Token = a.mac.String(), a.cl.Token
	b, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cl.HTTP+"/imaging/report", bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.env.Client.Do(req)
	if err != nil {
		return true, fmt.Errorf("POST %s/imaging/report: %w", a.cl.HTTP, unwrapURL(err))
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return false, nil
	case resp.StatusCode == http.StatusForbidden:
		return false, fmt.Errorf("%w (403 on a report)", ErrTokenRefused)
	case resp.StatusCode == http.StatusConflict:
		return false, fmt.Errorf("%w (409: %.200s)", ErrAttemptOver, strings.TrimSpace(string(body)))
	case resp.StatusCode >= 500:
		return true, fmt.Errorf("POST %s/imaging/report: %s", a.cl.HTTP, resp.Status)
	}
	return false, fmt.Errorf("POST %s/imaging/report: %s: %.200s", a.cl.HTTP, resp.Status, strings.TrimSpace(string(body)))
}

// final sends a done or failed report, trying again a bounded number of
// times; it still goes out when ctx is cancelled (for a short while).
func (a *run) final(ctx context.Context, r Report) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	return a.retry(ctx, reportTries, "report", func() (bool, error) { return a.post(ctx, r) })
}

// progress reports state and bytes every ReportEvery until stop is
// called. A 403 or 409 cancels the work through cancel: the server no
// longer wants this attempt.
func (a *run) progress(ctx context.Context, cancel context.CancelCauseFunc, read func() (state string, written, total int64)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(a.env.ReportEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			state, w, total := read()
			if total > 0 {
				a.printf("%s %s of %s", state, sizeString(w), sizeString(total))
			}
			rctx, rcancel := context.WithTimeout(ctx, a.env.ReportEvery*5)
			_, err := a.post(rctx, Report{State: state, Written: w, Total: max(total, 0)})
			rcancel()
			if errors.Is(err, ErrTokenRefused) || errors.Is(err, ErrAttemptOver) {
				cancel(err)
				return
			} else if err != nil {
				a.printf("progress report: %v", err) // the work goes on
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (a *run) deploy(ctx context.Context) error {
	t := a.task
	if t.ImagePath == "" {
		return fmt.Errorf("agent: task %s: no image_path", t.Task)
	}
	name := t.Image
	if name == "" {
		name = path.Base(t.ImagePath)
	}
	disk := t.Disk
	if disk == "" {
		u := a.cl.HTTP + "/" + strings.TrimLeft(t.ImagePath, "/")
		ix, err := image.FetchIndexHTTP(ctx, a.env.Client, u)
		if err != nil {
			return fmt.Errorf("the index of %s: %w", name, err)
		}
		d, err := PickDisk(a.env.SysRoot, int64(ix.Header.RawSize), name)
		if err != nil {
			return err
		}
		disk = filepath.Join(a.env.DevRoot, d.Name)
	}
	server := t.Server
	if server == "" {
		server = a.cl.Server
	}
	a.printf("task %s deploy %s -> %s", t.Task, name, disk)
	var phase sync.Mutex
	state := StateReceiving
	d := &image.Deployer{Opts: image.DeployOptions{
		Server:    server,
		HTTP:      a.cl.HTTP,
		Image:     t.ImagePath,
		Disk:      disk,
		Unicast:   server == "", // no TFTP server to join: everything by HTTP
		Verify:    t.Verify,
		Interface: a.iface,
		Start: mtftp.StartPolicy{MinReceivers: t.MinReceivers,
			MaxWait: time.Duration(t.MaxWaitMS) * time.Millisecond, Settle: time.Duration(t.SettleMS) * time.Millisecond},
		Log: a.deployLog(),
		Phase: func(p image.Phase) {
			a.printf("phase %s", p)
			if p == image.PhaseVerify {
				phase.Lock()
				state = StateVerifying
				phase.Unlock()
			}
		},
	}}
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := a.progress(dctx, cancel, func() (string, int64, int64) {
		w, total := d.Progress()
		phase.Lock()
		defer phase.Unlock()
		return state, w, total
	})
	deploy := a.env.Deploy
	if deploy == nil {
		deploy = func(ctx context.Context, d *image.Deployer) (image.DeployResult, error) { return d.Deploy(ctx) }
	}
	res, err := deploy(dctx, d)
	stop()
	if cause := context.Cause(dctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if err != nil {
		return err
	}
	phases := map[string]float64{}
	for p, dur := range res.Phases {
		phases[string(p)] = dur.Seconds()
	}
	w, total := d.Progress()
	if err := a.final(ctx, Report{State: StateDone, Written: w, Total: max(total, 0), Phases: phases}); err != nil {
		a.printf("could not report done: %v", err)
	}
	if a.cl.Debug {
		a.netStats()
	}
	a.printf("done in %.1fs (%s written, via %s; %d chunks needed, %d held, %d fetched again by unicast; phases %s)",
		time.Since(a.start).Seconds(), sizeString(w), orNothing(res.Via), res.Needed, res.Held, res.Refetched, phaseList(res.Phases))
	return nil
}

// unwrapURL drops net/http's "Get URL:" wrapping: the URL carries the
// token, and the caller names the request already.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func orNothing(s string) string {
	if s == "" {
		return "nothing needed"
	}
	return s
}

func (a *run) capture(ctx context.Context) error {
	t := a.task
	if t.UploadURL == "" {
		return fmt.Errorf("agent: capture task %s: no upload_url", t.Task)
	}
	disk := t.Disk
	if disk == "" {
		d, err := PickDisk(a.env.SysRoot, 1, "the capture")
		if err != nil {
			return err
		}
		disk = filepath.Join(a.env.DevRoot, d.Name)
	}
	a.printf("task %s capture %s -> %s", t.Task, disk, t.UploadURL)
	src, err := image.OpenSource(ctx, disk)
	if err != nil {
		return err
	}
	defer src.Close()
	meta, err := image.SourceMeta(src, disk, a.env.Version)
	if err != nil {
		return err
	}
	var read sync.Mutex
	var n int64
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := a.progress(cctx, cancel, func() (string, int64, int64) {
		read.Lock()
		defer read.Unlock()
		return StateReceiving, n, src.Size()
	})
	start := time.Now()
	opts := image.CreateOptions{Progress: func(b int64) { read.Lock(); n = b; read.Unlock() }}
	ix, _, err := image.Capture(cctx, a.env.Client, src, t.UploadURL, a.cl.Token, meta, opts)
	stop()
	if cause := context.Cause(cctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if err != nil {
		return err
	}
	if err := a.final(ctx, Report{State: StateDone, Written: src.Size(), Total: src.Size(),
		Phases: map[string]float64{"capture": time.Since(start).Seconds()}}); err != nil {
		a.printf("could not report done: %v", err)
	}
	// The digest on the console is what the admin compares with the
	// server's log: anyone holding the token could have uploaded first
	// (docs/imaging.md, "Hostile LAN").
	a.printf("done in %.1fs (%s captured, image_digest %x)", time.Since(a.start).Seconds(), sizeString(src.Size()), ix.Header.ImageDigest[:])
	return nil
}

// taskDisk is the server's rule for a task's disk (internal/config,
// ImagingTask.Check): a path under /dev.
var taskDisk = regexp.MustCompile(`^/dev/[A-Za-z0-9._/-]{1,64}$`)

// checkDisk refuses a task disk the server would never have sent: not a
// /dev path, or not a block device (a rogue answer naming /dev/mem or
// /dev/port must not be written, nor read out by a capture). "" is the
// first disk large enough, picked from /sys/block.
func checkDisk(disk string) error {
	if disk == "" {
		return nil
	}
	if !taskDisk.MatchString(disk) || strings.Contains(disk, "..") {
		return fmt.Errorf("disk %q is not a device under /dev", disk)
	}
	fi, err := os.Stat(disk)
	if err != nil {
		return fmt.Errorf("disk %q: %w", disk, err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("disk %q is not a block device (%v)", disk, fi.Mode().Type())
	}
	return nil
}

// phaseList is "index 0.1s, receive 4.0s, …" in the deploy's order.
func phaseList(p map[image.Phase]time.Duration) string {
	var parts []string
	for _, ph := range []image.Phase{image.PhaseIndex, image.PhaseScan, image.PhaseHoles, image.PhaseReceive, image.PhaseSync, image.PhaseVerify} {
		if d, ok := p[ph]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1fs", ph, d.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// deployLog is Env.Log, or with mtftpd.debug the console at debug level.
func (a *run) deployLog() zerolog.Logger {
	if a.cl.Debug {
		return zerolog.New(zerolog.ConsoleWriter{Out: a.env.Out, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).
			Level(zerolog.DebugLevel).With().Str("agent", "deploy").Logger()
	}
	return a.env.Log
}

// netStats prints, with mtftpd.debug, the kernel's UDP counters and the
// NIC's receive counters: where a multicast stream that never arrived
// was lost (checksum errors, full buffers, the NIC's drops).
func (a *run) netStats() {
	if b, err := os.ReadFile("/proc/net/snmp"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Udp:") || strings.HasPrefix(line, "IpExt:") {
				a.printf("debug: %s", line)
			}
		}
	}
	if a.iface == "" {
		return
	}
	for _, c := range []string{"rx_packets", "rx_dropped", "rx_errors", "rx_crc_errors", "rx_missed_errors", "rx_over_errors", "multicast"} {
		if b, err := os.ReadFile(filepath.Join(a.env.SysRoot, "class/net", a.iface, "statistics", c)); err == nil {
			a.printf("debug: %s %s %s", a.iface, c, strings.TrimSpace(string(b)))
		}
	}
}
