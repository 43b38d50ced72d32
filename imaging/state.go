package imaging

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mtftpd/mtftpd/imaging/wire"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
)

// stateVersion is the "version" of the JSON state file.
const stateVersion = 1

// maxStateFile bounds the state file read at start: maxNamed +
// MaxUnknownLimit records of about 1 KiB each fit well below it.
const maxStateFile = 256 << 20

// stateFile is the on-disk form: one JSON document, rewritten whole.
type stateFile struct {
	Version  int        `json:"version"`
	Tasks    []taskRec  `json:"tasks"`
	Machines []*machine `json:"machines"`
}

// load reads StateFile; m.mu is not held. A missing file is an empty
// state. A file that does not parse or whose records do not check is
// moved aside (never overwritten) and reported as ErrCorruptState.
func (m *Manager) load() error {
	for _, tmp := range atomicfile.RemoveTemps(m.StateFile) {
		m.Log.Warn().Str("file", tmp).Msg("imaging: removed a temp state file left by an interrupted write")
	}
	f, err := os.Open(m.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		m.Log.Info().Str("file", m.StateFile).Msg("imaging: no state file yet, starting empty")
		return nil
	}
	if err != nil {
		return fmt.Errorf("imaging.state_file: %w", err)
	}
	data, err := readAll(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("imaging.state_file: %w", err)
	}
	var st stateFile
	err = json.Unmarshal(data, &st)
	if err == nil {
		err = m.restore(&st)
	}
	if err != nil {
		aside := m.StateFile + ".corrupt-" + strconv.FormatInt(m.now().Unix(), 10)
		if rerr := os.Rename(m.StateFile, aside); rerr != nil {
			return fmt.Errorf("imaging.state_file %s is corrupt (%v) and cannot be moved aside: %w", m.StateFile, err, rerr)
		}
		m.mu.Lock()
		m.tasks, m.machines, m.unknowns = map[string]*taskRec{}, map[string]*machine{}, 0
		m.mu.Unlock()
		return fmt.Errorf("%w: %s: %v; moved to %s, starting without it (the config's tasks start over)", ErrCorruptState, m.StateFile, err, aside)
	}
	m.Log.Info().Str("file", m.StateFile).Int("tasks", len(st.Tasks)).Int("machines", len(st.Machines)).Msg("imaging: state loaded")
	return nil
}

func readAll(f *os.File) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err == nil && len(b) > maxStateFile {
		err = fmt.Errorf("%s is more than %d bytes", f.Name(), maxStateFile)
	}
	return b, err
}

// restore checks a decoded state file and installs it.
func (m *Manager) restore(st *stateFile) error {
	if st.Version != stateVersion {
		return fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	if len(st.Tasks) > maxTasks*2 || len(st.Machines) > maxNamed+max(m.MaxUnknown, 0)*2+1024 {
		return fmt.Errorf("%d tasks and %d machines: more than mtftpd ever writes", len(st.Tasks), len(st.Machines))
	}
	tasks := map[string]*taskRec{}
	for i := range st.Tasks {
		t := st.Tasks[i]
		// A host the task named may have left [[dhcp.host]] since: its
		// records stay, so the names are taken as they are.
		named := map[string]bool{}
		for _, h := range t.Hosts {
			named[h] = true
		}
		if errs := t.Check(named); len(errs) > 0 {
			return fmt.Errorf("tasks[%d] (%q): %v", i, t.Name, errs[0])
		}
		if tasks[t.Name] != nil {
			return fmt.Errorf("tasks[%d]: %q twice", i, t.Name)
		}
		if t.Source != "config" && t.Source != "api" {
			return fmt.Errorf("tasks[%d]: source %q", i, t.Source)
		}
		tasks[t.Name] = &t
	}
	machines := map[string]*machine{}
	unknowns := 0
	for i, r := range st.Machines {
		if r == nil {
			return fmt.Errorf("machines[%d]: null", i)
		}
		mac, err := net.ParseMAC(r.MAC)
		if err != nil || len(mac) != 6 || mac.String() != r.MAC {
			return fmt.Errorf("machines[%d]: mac %q", i, r.MAC)
		}
		if machines[r.MAC] != nil {
			return fmt.Errorf("machines[%d]: %s twice", i, r.MAC)
		}
		if tasks[r.Task] == nil {
			return fmt.Errorf("machines[%d]: task %q is not in the file", i, r.Task)
		}
		known := false
		for _, s := range States {
			known = known || s == r.State
		}
		if !known || r.Attempts < 0 || r.Attempts > 1000 || r.Written < 0 || r.Total < 0 || len(r.Stale) > maxStaleTokens*2 {
			return fmt.Errorf("machines[%d] (%s): state %q, attempts %d, written %d, total %d", i, r.MAC, r.State, r.Attempts, r.Written, r.Total)
		}
		if r.Unknown {
			unknowns++
		}
		machines[r.MAC] = r
	}
	m.mu.Lock()
	m.tasks, m.machines, m.unknowns = tasks, machines, unknowns
	m.mu.Unlock()
	return nil
}

// save writes the state file (if any) with the state as of now. Writes
// are serialised, and each snapshots the state when it starts, so the
// last write holds the last change.
func (m *Manager) save() error {
	if m.StateFile == "" {
		return nil
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	st := stateFile{Version: stateVersion, Tasks: make([]taskRec, 0, len(m.tasks)), Machines: make([]*machine, 0, len(m.machines))}
	for _, t := range m.tasks {
		st.Tasks = append(st.Tasks, *t)
	}
	for _, r := range m.machines {
		c := *r
		st.Machines = append(st.Machines, &c)
	}
	data, err := json.Marshal(st)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(m.StateFile, data, 0o600); err != nil {
		return fmt.Errorf("imaging.state_file: %w", err)
	}
	return nil
}

// saveLogged is save for paths that answer a machine regardless: the
// failure is logged.
func (m *Manager) saveLogged() {
	if err := m.save(); err != nil {
		m.Log.Error().Err(err).Msg("imaging: state not saved (it is kept in memory)")
	}
}

// Close writes the state a last time (progress reports are not written
// one by one).
func (m *Manager) Close() error { return m.save() }

// Report is the agent's POST /imaging/report body.
type Report = wire.Report

// Bounds of a report's free-form parts.
const (
	maxReason     = 512
	maxPhases     = 16
	maxPhaseName  = 32
	maxPhaseValue = 7 * 24 * 3600 // seconds: a week
)

// check validates a report's values (not its token).
func checkReport(rep *Report) error {
	switch rep.State {
	case StateReceiving, StateVerifying, StateDone, StateFailed:
	default:
		return fmt.Errorf("%w: state %q is not receiving, verifying, done or failed", ErrBadRequest, rep.State)
	}
	if rep.Written < 0 || rep.Total < 0 || rep.Total > 0 && rep.Written > rep.Total {
		return fmt.Errorf("%w: written %d of total %d", ErrBadRequest, rep.Written, rep.Total)
	}
	if len(rep.Phases) > maxPhases {
		return fmt.Errorf("%w: %d phases, at most %d", ErrBadRequest, len(rep.Phases), maxPhases)
	}
	for k, v := range rep.Phases {
		if k == "" || len(k) > maxPhaseName || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			return fmt.Errorf("%w: phase name %q: want 1 to %d of a-z, 0-9, _", ErrBadRequest, k, maxPhaseName)
		}
		if math.IsNaN(v) || v < 0 || v > maxPhaseValue {
			return fmt.Errorf("%w: phase %s: %v seconds", ErrBadRequest, k, v)
		}
	}
	rep.Reason = cleanReason(rep.Reason)
	return nil
}

// cleanReason keeps a reason printable and short: it is shown on the
// status page and in terminals.
func cleanReason(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxReason {
			break
		}
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Report applies an agent's report to its machine's current attempt.
// Errors: ErrBadRequest, ErrNoTask, ErrToken, ErrStale (the attempt is
// over; a repeat of the report that ended it is accepted).
func (m *Manager) Report(rep Report) error {
	if err := checkReport(&rep); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	r, err := m.current(rep.MAC, rep.Token)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	switch {
	case terminal(r.State) && r.State == rep.State:
		m.mu.Unlock()
		return nil // a repeat: the agent did not see our answer
	case terminal(r.State), r.State == StatePending:
		m.mu.Unlock()
		return fmt.Errorf("%w: the machine is %s", ErrStale, r.State)
	}
	t := m.tasks[r.Task]
	if rep.State == StateReceiving && r.State == StateVerifying {
		// States only go forward in an attempt (the agent never goes back
		// from verifying): a token holder flipping receiving and verifying
		// would otherwise make every report a state change, each a whole
		// state file written and fsynced.
		rep.State = StateVerifying
	}
	if rep.Written > r.Written {
		m.written += uint64(rep.Written - r.Written)
	}
	changed := r.State != rep.State
	r.Written, r.Total, r.Updated = rep.Written, rep.Total, now
	if rep.Phases != nil {
		r.Phases = rep.Phases
	}
	switch rep.State {
	case StateDone:
		r.State, r.Finished, r.Reason = StateDone, now, ""
		m.hist.Observe(now.Sub(r.Attempt).Seconds())
		m.Log.Info().Str("mac", r.MAC).Str("host", r.Host).Str("task", r.Task).Int("attempt", r.Attempts).
			Dur("duration", now.Sub(r.Attempt)).Msg("imaging: machine done")
	case StateFailed:
		reason := rep.Reason
		if reason == "" {
			reason = "the agent reported a failure without a reason"
		}
		m.failAttempt(t, r, reason, now)
	default:
		r.State = rep.State
	}
	m.mu.Unlock()
	if changed {
		// Progress alone is not written: a crash loses a progress figure,
		// never a state.
		m.saveLogged()
	}
	return nil
}

// AgentTask is the agent's GET /imaging/task answer (docs/imaging.md,
// "Agent API"; imaging/wire, shared with the agent).
type AgentTask = wire.Task

// TaskFor is the task of the machine mac's current attempt; the errors
// are Report's. via is how the agent's own request reached the server:
// upload_url and server are built from it, never from the render that
// handed the attempt out, which anyone on the LAN may have made for this
// MAC (with a Host header of their choosing: a capture would then upload
// the disk to them). via.Server "" falls back to the hand-out's.
func (m *Manager) TaskFor(mac, token string, via Via) (AgentTask, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.current(mac, token)
	if errors.Is(err, ErrStale) {
		// The contract's GET knows two refusals: no task (the machine is
		// finished) and not the current token (an earlier attempt's).
		if hw, _ := net.ParseMAC(mac); hw != nil && terminal(m.machines[hw.String()].State) {
			return AgentTask{}, fmt.Errorf("%w: %v", ErrNoTask, err)
		}
		return AgentTask{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	if err != nil {
		return AgentTask{}, err
	}
	t := m.tasks[r.Task]
	if terminal(r.State) || t.Cancelled != nil {
		return AgentTask{}, fmt.Errorf("%w: the machine is %s", ErrNoTask, r.State)
	}
	path := t.Image
	if m.Prefix != "" {
		path = m.Prefix + "/" + t.Image
	}
	a := AgentTask{
		Task: t.Name, Action: t.Action, Image: t.Image, ImagePath: path, Disk: t.Disk, After: t.AfterOrDefault(),
		Verify: t.VerifyOrDefault(), MinReceivers: t.MinReceivers, MaxWaitMS: t.MaxWait.Milliseconds(),
		SettleMS: t.Settle.Milliseconds(), Server: via.Server,
	}
	if a.Server == "" {
		a.Server = r.Server
	}
	if t.Action == ActionCapture {
		a.UploadURL = strings.TrimSuffix(via.HTTP, "/") + "/" + path
	}
	return a, nil
}
