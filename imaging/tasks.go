package imaging

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/mtftpd/mtftpd/imaging/wire"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/config"
	"github.com/mtftpd/mtftpd/internal/loglimit"
)

// Task is a reimaging task as the config file and POST /api/imaging/tasks
// write it (docs/imaging.md, "Config").
type Task = config.ImagingTask

// Machine states (docs/imaging.md, "Machine states").
const (
	StatePending   = "pending"
	StateBooting   = "booting"
	StateReceiving = wire.StateReceiving // the four an agent reports (imaging/wire)
	StateVerifying = wire.StateVerifying
	StateDone      = wire.StateDone
	StateFailed    = wire.StateFailed
	StateCancelled = "cancelled"
)

// States lists every machine state, in the order a machine goes through
// them.
var States = []string{StatePending, StateBooting, StateReceiving, StateVerifying, StateDone, StateFailed, StateCancelled}

// Boot actions (Decision.Action, {{.Imaging.Action}}).
const (
	ActionDeploy  = "deploy"
	ActionCapture = "capture"
	ActionLocal   = "local"
)

// renderWindow: renders for the same machine within this long count as
// one hand-out (pxelinux and iPXE may fetch a config more than once per
// boot; docs/imaging.md, "Template variables").
const renderWindow = 60 * time.Second

// Bounds of the state the manager keeps, so a file or an API client
// cannot make it grow without end: tasks (a room a task; cancelled ones
// are pruned first), machine records named by tasks (records made for
// unknown machines are capped by MaxUnknown on top), the tokens of
// earlier attempts remembered to tell a stale report (409) from a forged
// one (403).
const (
	maxTasks       = 1024
	maxNamed       = 16384
	maxStaleTokens = 4
)

// Errors of the manager, tested by the HTTP handlers.
var (
	ErrNoTask     = errors.New("no task for this machine")
	ErrToken      = errors.New("wrong token")
	ErrStale      = errors.New("not the machine's current attempt")
	ErrBadRequest = errors.New("bad request")
	ErrExists     = errors.New("task exists")
	ErrNotFound   = errors.New("no such task")
	ErrFull       = errors.New("too many tasks or machines")
	// ErrCorruptState: the state file did not load; it was moved aside
	// and the manager started without it.
	ErrCorruptState = errors.New("imaging state file corrupt")
)

// Manager keeps the reimaging tasks and one record per machine (by MAC),
// decides what a network-booting machine is handed (Decide), and takes
// the agent's reports (api.go). Set the fields, then call Open; every
// method is safe for concurrent use after that.
type Manager struct {
	// Dir is the imaging directory; Prefix its path under the TFTP root
	// ("images"), which image_path and upload_url are built from.
	Dir, Prefix string
	// Kernel and Initrd are the deploy environment, names under the TFTP
	// root; Cmdline is appended to the agent's kernel arguments.
	Kernel, Initrd, Cmdline string
	// TFTPPort is the TFTP server's port: GET /imaging/task names the
	// server at the address the agent's request came to, on this port
	// ("" = the address the attempt was handed out on).
	TFTPPort string
	// MaxUnknown caps the records tasks with unknown = true may create.
	MaxUnknown int
	// StateFile, if set, makes tasks and machine records durable.
	StateFile string
	// Hosts maps [[dhcp.host]] hostnames to their MACs (a task's hosts).
	Hosts map[string]net.HardwareAddr
	// Log receives task changes, state changes and failed writes.
	Log zerolog.Logger
	// Now is the clock (nil: time.Now); tests set it.
	Now func() time.Time

	mu       sync.Mutex
	tasks    map[string]*taskRec
	machines map[string]*machine // by MAC (aa:bb:cc:dd:ee:ff)
	unknowns int                 // records made for unknown tasks
	written  uint64              // bytes reported written, over all machines
	capped   time.Time           // last "max_unknown reached" log line
	logs     loglimit.Limiter    // refusals a client can trigger per request: a line per kind per 10 s
	hist     prometheus.Histogram

	wmu sync.Mutex // one state file write at a time
}

// taskRec is a task and its bookkeeping (the state file's and the admin
// API's form).
type taskRec struct {
	Task
	// Source is "config" ([[imaging.task]]) or "api" (added at run time).
	Source    string     `json:"source"`
	Created   time.Time  `json:"created"`
	Cancelled *time.Time `json:"cancelled,omitempty"`
}

// machine is one machine's record; the token fields never leave the
// manager except in the state file (0600).
type machine struct {
	MAC      string             `json:"mac"`
	Host     string             `json:"host,omitempty"`
	Task     string             `json:"task"`
	State    string             `json:"state"`
	Attempts int                `json:"attempts"`
	Written  int64              `json:"written"`
	Total    int64              `json:"total"`
	Reason   string             `json:"reason,omitempty"`
	Phases   map[string]float64 `json:"phases,omitempty"`
	Started  time.Time          `json:"started,omitzero"` // first hand-out
	Updated  time.Time          `json:"updated"`
	Finished time.Time          `json:"finished,omitzero"`
	Unknown  bool               `json:"unknown,omitempty"` // made by an unknown task (counts against MaxUnknown)

	Token   string    `json:"token,omitempty"`
	Stale   []string  `json:"stale_tokens,omitempty"`
	Handed  time.Time `json:"handed,omitzero"`  // this attempt's hand-out
	Server  string    `json:"server,omitempty"` // the TFTP server it was handed
	Attempt time.Time `json:"attempt_start,omitzero"`
}

func terminal(state string) bool {
	return state == StateDone || state == StateFailed || state == StateCancelled
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Open loads the state file, if any, and merges the config's tasks into
// it by name (a task of the same name keeps its machines). A state file
// that does not load is moved aside (StateFile + ".corrupt-<unix time>")
// and Open goes on without it, returning an error wrapping
// ErrCorruptState after everything else is set up: the caller logs it.
// Any other error (a config task whose image is missing) means the
// manager must not be used.
func (m *Manager) Open(tasks []Task) error {
	m.mu.Lock()
	m.tasks = map[string]*taskRec{}
	m.machines = map[string]*machine{}
	m.hist = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "mtftpd_imaging_deploy_seconds",
		Help: "Time from a machine's hand-out of the deploy environment to its done report, per successful attempt.",
		// 30 s (a small image on a fast LAN) to 2 h (a big one over a slow link).
		Buckets: []float64{30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
	})
	m.mu.Unlock()
	var corrupt error
	if m.StateFile != "" {
		if err := m.load(); err != nil {
			if !errors.Is(err, ErrCorruptState) {
				return err
			}
			corrupt = err
		}
	}
	if err := m.SetConfigTasks(tasks); err != nil {
		return err
	}
	return corrupt
}

// SetConfigTasks merges the config's tasks (at Open and on SIGHUP): new
// ones are added, changed ones take the new definition and keep their
// machines, config tasks no longer in the config are cancelled. Tasks
// added at run time are kept. Nothing changes unless every task is valid.
func (m *Manager) SetConfigTasks(tasks []Task) error {
	var errs []error
	names := map[string]bool{}
	for i, t := range tasks {
		for _, e := range m.check(t) {
			errs = append(errs, fmt.Errorf("imaging.task[%d].%s: %s", i, e.Key, e.Problem))
		}
		names[t.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	for _, t := range tasks {
		old := m.tasks[t.Name]
		switch {
		case old == nil:
			m.tasks[t.Name] = &taskRec{Task: t, Source: "config", Created: now}
			m.claim(m.tasks[t.Name], true, now)
		case old.Source != "config" || !taskEqual(old.Task, t) || old.Cancelled != nil:
			old.Task, old.Source, old.Cancelled = t, "config", nil
			m.claim(old, false, now)
		}
	}
	for name, t := range m.tasks {
		if t.Source == "config" && !names[name] && t.Cancelled == nil {
			m.cancel(t, "task removed from the config", now)
		}
	}
	m.prune()
	m.mu.Unlock()
	return m.save()
}

func taskEqual(a, b Task) bool {
	return fmt.Sprintf("%#v", normalise(a)) == fmt.Sprintf("%#v", normalise(b))
}

// normalise spells the defaults out, so a task written with them and one
// without compare equal.
func normalise(t Task) Task {
	v, r := t.VerifyOrDefault(), t.RetriesOrDefault()
	t.Verify, t.Retries, t.After = &v, &r, t.AfterOrDefault()
	t.MACs = slices.Clone(t.MACs)
	for i, s := range t.MACs {
		if mac, err := net.ParseMAC(s); err == nil {
			t.MACs[i] = mac.String()
		}
	}
	return t
}

// check is Task.Check plus what needs the file system: a deploy's image
// exists in Dir.
func (m *Manager) check(t Task) []config.FieldError {
	hosts := map[string]bool{}
	for h := range m.Hosts {
		hosts[h] = true
	}
	errs := t.Check(hosts)
	if t.Action == ActionDeploy && len(errs) == 0 {
		fi, err := os.Stat(filepath.Join(m.Dir, t.Image))
		if err != nil || !fi.Mode().IsRegular() {
			errs = append(errs, config.FieldError{Key: "image", Problem: fmt.Sprintf("%q is not an image in imaging.dir %s", t.Image, m.Dir)})
		}
	}
	if m.Kernel == "" || m.Initrd == "" {
		errs = append(errs, config.FieldError{Key: "action", Problem: "tasks need the deploy environment: set imaging.kernel and imaging.initrd"})
	}
	return errs
}

// macsOf lists the machines a task names: its MACs, then its hosts'.
func (m *Manager) macsOf(t Task) []string {
	var out []string
	for _, s := range t.MACs {
		if mac, err := net.ParseMAC(s); err == nil {
			out = append(out, mac.String())
		}
	}
	for _, h := range t.Hosts {
		if mac := m.Hosts[h]; mac != nil {
			out = append(out, mac.String())
		}
	}
	return out
}

// claim makes the records of the machines t names; m.mu is held. A
// machine with no record, or one whose task is gone, gets a pending
// record; a new task also takes over machines another task finished
// with. Records of machines t no longer names are cancelled.
func (m *Manager) claim(t *taskRec, isNew bool, now time.Time) {
	named := map[string]bool{}
	for _, mac := range m.macsOf(t.Task) {
		named[mac] = true
		r := m.machines[mac]
		switch {
		case r != nil && r.Task == t.Name:
			continue
		case r != nil && m.tasks[r.Task] != nil && !(isNew && terminal(r.State)):
			if !terminal(r.State) {
				m.Log.Warn().Str("mac", mac).Str("task", t.Name).Str("in_task", r.Task).Str("state", r.State).
					Msg("imaging: machine is in another task's attempt; left there")
			}
			continue
		}
		if r != nil && r.Unknown {
			m.unknowns--
		}
		m.machines[mac] = &machine{MAC: mac, Host: m.hostOf(mac), Task: t.Name, State: StatePending, Updated: now}
	}
	if t.Unknown {
		return
	}
	for _, r := range m.machines {
		if r.Task == t.Name && !named[r.MAC] && !terminal(r.State) {
			r.State, r.Reason, r.Updated, r.Token = StateCancelled, "no longer named by task "+t.Name, now, ""
		}
	}
}

func (m *Manager) hostOf(mac string) string {
	for h, a := range m.Hosts {
		if a.String() == mac {
			return h
		}
	}
	return ""
}

// cancel marks t cancelled and its unfinished machines too; m.mu is held.
func (m *Manager) cancel(t *taskRec, why string, now time.Time) {
	t.Cancelled = &now
	for _, r := range m.machines {
		if r.Task == t.Name && !terminal(r.State) {
			r.State, r.Reason, r.Updated, r.Finished, r.Token = StateCancelled, why, now, now, ""
		}
	}
	m.Log.Info().Str("task", t.Name).Str("why", why).Msg("imaging: task cancelled")
}

// prune drops the oldest cancelled tasks, and their machine records,
// while there are more than maxTasks; m.mu is held.
func (m *Manager) prune() {
	if len(m.tasks) <= maxTasks {
		return
	}
	var gone []*taskRec
	for _, t := range m.tasks {
		if t.Cancelled != nil {
			gone = append(gone, t)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].Cancelled.Before(*gone[j].Cancelled) })
	for _, t := range gone {
		if len(m.tasks) <= maxTasks {
			break
		}
		delete(m.tasks, t.Name)
		for mac, r := range m.machines {
			if r.Task == t.Name {
				if r.Unknown {
					m.unknowns--
				}
				delete(m.machines, mac)
			}
		}
	}
}

// AddTask adds a task at run time (POST /api/imaging/tasks). A task of
// the same name is refused (ErrExists) unless it was cancelled: then the
// new one replaces it, its machines starting over.
func (m *Manager) AddTask(t Task) error {
	if errs := m.check(t); len(errs) > 0 {
		list := make([]error, len(errs))
		for i, e := range errs {
			list[i] = e
		}
		return fmt.Errorf("%w: %w", ErrBadRequest, errors.Join(list...))
	}
	now := m.now()
	m.mu.Lock()
	if old := m.tasks[t.Name]; old != nil {
		if old.Cancelled == nil {
			m.mu.Unlock()
			return fmt.Errorf("%w: %q (cancel it first, or pick another name)", ErrExists, t.Name)
		}
		for mac, r := range m.machines {
			if r.Task == t.Name {
				if r.Unknown {
					m.unknowns--
				}
				delete(m.machines, mac)
			}
		}
		delete(m.tasks, t.Name)
	}
	if err := m.admissible(t); err != nil {
		m.mu.Unlock()
		return err
	}
	rec := &taskRec{Task: t, Source: "api", Created: now}
	m.tasks[t.Name] = rec
	m.claim(rec, true, now)
	m.prune()
	m.mu.Unlock()
	m.Log.Info().Str("task", t.Name).Str("action", t.Action).Str("image", t.Image).Int("machines", len(t.MACs)+len(t.Hosts)).
		Bool("unknown", t.Unknown).Msg("imaging: task added")
	return m.save()
}

// admissible refuses a task that would overrun the bounds or take a
// machine from another task's running attempt; m.mu is held.
func (m *Manager) admissible(t Task) error {
	live := 0
	for _, x := range m.tasks {
		if x.Cancelled == nil {
			live++
			if t.Unknown && x.Unknown {
				return fmt.Errorf("%w: task %q already takes the unknown machines", ErrExists, x.Name)
			}
		}
	}
	if live >= maxTasks {
		return fmt.Errorf("%w: %d tasks are not cancelled (at most %d)", ErrFull, live, maxTasks)
	}
	named := 0
	for _, r := range m.machines {
		if !r.Unknown {
			named++
		}
	}
	macs := m.macsOf(t)
	if named+len(macs) > maxNamed {
		return fmt.Errorf("%w: %d machine records plus %d would pass %d", ErrFull, named, len(macs), maxNamed)
	}
	for _, mac := range macs {
		if r := m.machines[mac]; r != nil && !terminal(r.State) && m.tasks[r.Task] != nil {
			return fmt.Errorf("%w: machine %s is %s in task %q", ErrExists, mac, r.State, r.Task)
		}
	}
	other := ActionDeploy
	if t.Action == ActionDeploy {
		other = ActionCapture
	}
	if x := m.imageBusy(t.Image, other); x != nil {
		return fmt.Errorf("%w: %s task %q has machines still to do with image %s: a capture must not replace an image a deploy serves", ErrExists, x.Action, x.Name, t.Image)
	}
	return nil
}

// imageBusy is a task that is not cancelled, of action, naming image, with
// machines still to do (an unknown task always has); m.mu is held. A
// capture replacing an image while a deploy task serves it would hand
// the deploy's later machines another image than the one the admin
// chose, and break the ones receiving it.
func (m *Manager) imageBusy(image, action string) *taskRec {
	for _, x := range m.tasks {
		if x.Cancelled != nil || x.Action != action || x.Image != image {
			continue
		}
		if x.Unknown {
			return x
		}
		for _, r := range m.machines {
			if r.Task == x.Name && !terminal(r.State) {
				return x
			}
		}
	}
	return nil
}

// Cancel cancels a task: its machines not yet done are cancelled and get
// local from then on.
func (m *Manager) Cancel(name string) error {
	m.mu.Lock()
	t := m.tasks[name]
	if t == nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if t.Cancelled == nil {
		m.cancel(t, "task cancelled", m.now())
	}
	m.mu.Unlock()
	return m.save()
}

// Via is how a machine reached the server: the mirror's base URL as it
// used it and the TFTP server address (host:port) on that interface. The
// deploy environment's command line points there, so a task works on
// whichever interface a machine boots from.
type Via struct {
	HTTP   string // "http://192.0.2.1:8080", no trailing slash
	Server string // "192.0.2.1:69"
}

// Decision is what a network-booting machine is handed ({{.Imaging}}).
type Decision struct {
	Action         string // deploy, capture or local
	Task           string // "" for local
	Kernel, Initrd string // the deploy environment ("" for local)
	Cmdline        string // mtftpd.* arguments, then imaging.cmdline
	State          string // the machine's state; "" when no task names it
}

// Decide is the boot decision for the machine mac (host: its name, for
// the records; known: a [[dhcp.host]] lists it). Handing out deploy or
// capture marks the machine booting and counts an attempt, except that
// decisions within renderWindow of a hand-out repeat it. A machine that
// was handed the deploy environment and network-boots again without a
// result counts a failed attempt; past its retries it is failed and gets
// local from then on.
func (m *Manager) Decide(mac net.HardwareAddr, host string, known bool, via Via) Decision {
	if len(mac) != 6 {
		return Decision{Action: ActionLocal}
	}
	key := mac.String()
	now := m.now()
	m.mu.Lock()
	r := m.machines[key]
	changed := false
	if r == nil {
		u := m.unknownTask()
		if u == nil || known {
			m.mu.Unlock()
			return Decision{Action: ActionLocal}
		}
		if m.unknowns >= m.MaxUnknown {
			if now.Sub(m.capped) > time.Minute {
				m.capped = now
				m.Log.Warn().Str("mac", key).Str("task", u.Name).Int("max_unknown", m.MaxUnknown).
					Msg("imaging: imaging.max_unknown machine records reached; unknown machines boot local")
			}
			m.mu.Unlock()
			return Decision{Action: ActionLocal}
		}
		r = &machine{MAC: key, Task: u.Name, State: StatePending, Unknown: true, Updated: now}
		m.machines[key] = r
		m.unknowns++
		changed = true
	}
	if host != "" && r.Host != host && len(host) <= 64 {
		r.Host, changed = host, true
	}
	t := m.tasks[r.Task]
	if t == nil || t.Cancelled != nil {
		if !terminal(r.State) {
			r.State, r.Reason, r.Updated, r.Token, changed = StateCancelled, "task cancelled", now, "", true
		}
	}
	switch r.State {
	case StateBooting:
		if now.Sub(r.Handed) < renderWindow && now.Sub(r.Handed) >= 0 {
			d := m.decision(t, r, via)
			m.mu.Unlock()
			return d
		}
		m.failAttempt(t, r, "booted the deploy environment without a result", now)
		changed = true
	case StateReceiving, StateVerifying:
		m.failAttempt(t, r, fmt.Sprintf("network-booted again while %s (%d of %d bytes)", r.State, r.Written, r.Total), now)
		changed = true
	}
	var d Decision
	if r.State == StatePending {
		r.Attempts++
		if r.Token != "" {
			r.Stale = append(r.Stale, r.Token)
			if len(r.Stale) > maxStaleTokens {
				r.Stale = r.Stale[len(r.Stale)-maxStaleTokens:]
			}
		}
		r.Token = newToken()
		r.State, r.Handed, r.Attempt, r.Updated = StateBooting, now, now, now
		r.Written, r.Total, r.Phases = 0, 0, nil
		r.Server = via.Server
		if r.Started.IsZero() {
			r.Started = now
		}
		changed = true
		d = m.decision(t, r, via)
		m.Log.Info().Str("mac", key).Str("host", r.Host).Str("task", r.Task).Str("action", d.Action).Int("attempt", r.Attempts).
			Msg("imaging: deploy environment handed out")
	} else {
		d = Decision{Action: ActionLocal, State: r.State}
		// Debug only: every render of a boot config for a named machine
		// lands here, and anyone may ask for one.
		m.Log.Debug().Str("mac", key).Str("task", r.Task).Str("state", r.State).Msg("imaging: local boot")
	}
	m.mu.Unlock()
	if changed {
		m.saveLogged()
	}
	return d
}

// unknownTask is the task that takes unknown machines, if any; m.mu is
// held.
func (m *Manager) unknownTask() *taskRec {
	for _, t := range m.tasks {
		if t.Unknown && t.Cancelled == nil && t.Action == ActionDeploy {
			return t
		}
	}
	return nil
}

// decision builds a hand-out for r's current attempt; m.mu is held.
func (m *Manager) decision(t *taskRec, r *machine, via Via) Decision {
	args := []string{
		"mtftpd.http=" + via.HTTP, "mtftpd.server=" + via.Server, "mtftpd.task=" + t.Name,
		"mtftpd.token=" + r.Token, "mtftpd.mac=" + r.MAC,
	}
	if m.Cmdline != "" {
		args = append(args, m.Cmdline)
	}
	return Decision{Action: t.Action, Task: t.Name, Kernel: m.Kernel, Initrd: m.Initrd, Cmdline: strings.Join(args, " "), State: r.State}
}

// failAttempt ends r's attempt as failed: back to pending while retries
// are left, else failed for good; m.mu is held.
func (m *Manager) failAttempt(t *taskRec, r *machine, reason string, now time.Time) {
	r.Reason, r.Updated = reason, now
	retries := config.DefaultTaskRetries
	if t != nil {
		retries = t.RetriesOrDefault()
	}
	if r.Attempts > retries {
		r.State, r.Finished = StateFailed, now
		m.Log.Warn().Str("mac", r.MAC).Str("task", r.Task).Int("attempts", r.Attempts).Str("reason", reason).Msg("imaging: machine failed")
		return
	}
	r.State = StatePending
	m.Log.Warn().Str("mac", r.MAC).Str("task", r.Task).Int("attempts", r.Attempts).Str("reason", reason).Msg("imaging: attempt failed; the machine gets another")
}

// newToken is a random per-attempt token: 16 bytes, hex.
func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}

// current finds r by MAC and checks token against its attempt: ErrNoTask
// without a record, ErrStale for an earlier attempt's token, ErrToken for
// any other; m.mu is held.
func (m *Manager) current(mac, token string) (*machine, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("%w: mac %q", ErrBadRequest, mac)
	}
	r := m.machines[hw.String()]
	if r == nil || m.tasks[r.Task] == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoTask, hw)
	}
	if r.Token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(r.Token)) == 1 {
		return r, nil
	}
	for _, s := range r.Stale {
		if subtle.ConstantTimeCompare([]byte(token), []byte(s)) == 1 {
			return nil, fmt.Errorf("%w: the token is attempt-old, the machine is %s (attempt %d)", ErrStale, r.State, r.Attempts)
		}
	}
	if r.Token == "" && terminal(r.State) {
		return nil, fmt.Errorf("%w: the machine is %s", ErrStale, r.State)
	}
	return nil, ErrToken
}

// CaptureAllowed reports whether token is the current token of a machine
// whose running capture task writes the image name, and no deploy task
// with machines still to do serves that name: the capture upload
// (Server.TaskToken) accepts it for that one name.
func (m *Manager) CaptureAllowed(name, token string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tasks {
		if t.Action != ActionCapture || t.Image != name || t.Cancelled != nil || m.imageBusy(name, ActionDeploy) != nil {
			continue
		}
		for _, mac := range m.macsOf(t.Task) {
			r := m.machines[mac]
			if r != nil && r.Task == t.Name && (r.State == StateBooting || r.State == StateReceiving || r.State == StateVerifying) &&
				subtle.ConstantTimeCompare([]byte(token), []byte(r.Token)) == 1 {
				return true
			}
		}
	}
	return false
}

// MachineStatus is a machine as GET /api/imaging shows it.
type MachineStatus struct {
	MAC      string             `json:"mac"`
	Host     string             `json:"host,omitempty"`
	Task     string             `json:"task"`
	State    string             `json:"state"`
	Written  int64              `json:"written"`
	Total    int64              `json:"total"`
	Reason   string             `json:"reason,omitempty"`
	Attempts int                `json:"attempts"`
	Phases   map[string]float64 `json:"phases,omitempty"`
	Started  *time.Time         `json:"started,omitempty"`
	Updated  time.Time          `json:"updated"`
	Finished *time.Time         `json:"finished,omitempty"`
	// Seconds is the time since the first hand-out, to Finished once
	// finished.
	Seconds float64 `json:"seconds"`
}

// TaskStatus is a task as GET /api/imaging shows it.
type TaskStatus struct {
	taskRec
	// Machines counts its machine records by state.
	Machines map[string]int `json:"machines"`
}

// Status lists the tasks (by name) and machines (by task, then MAC).
func (m *Manager) Status() ([]TaskStatus, []MachineStatus) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	tasks := make([]TaskStatus, 0, len(m.tasks))
	counts := map[string]map[string]int{}
	machines := make([]MachineStatus, 0, len(m.machines))
	for _, r := range m.machines {
		if counts[r.Task] == nil {
			counts[r.Task] = map[string]int{}
		}
		counts[r.Task][r.State]++
		s := MachineStatus{MAC: r.MAC, Host: r.Host, Task: r.Task, State: r.State, Written: r.Written, Total: r.Total,
			Reason: r.Reason, Attempts: r.Attempts, Phases: r.Phases, Updated: r.Updated}
		if !r.Started.IsZero() {
			st := r.Started
			s.Started = &st
			end := now
			if !r.Finished.IsZero() {
				f := r.Finished
				s.Finished, end = &f, f
			}
			s.Seconds = end.Sub(st).Seconds()
		}
		machines = append(machines, s)
	}
	for _, t := range m.tasks {
		x := TaskStatus{taskRec: *t, Machines: counts[t.Name]}
		if x.Machines == nil {
			x.Machines = map[string]int{}
		}
		tasks = append(tasks, x)
	}
	slices.SortFunc(tasks, func(a, b TaskStatus) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(machines, func(a, b MachineStatus) int {
		if c := strings.Compare(a.Task, b.Task); c != 0 {
			return c
		}
		return strings.Compare(a.MAC, b.MAC)
	})
	return tasks, machines
}
