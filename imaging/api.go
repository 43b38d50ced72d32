package imaging

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxReportBody caps POST /imaging/report (docs/imaging.md): a report is
// a few hundred bytes.
const maxReportBody = 4 << 10

// maxTaskBody caps POST /api/imaging/tasks: a task of MaxTaskMACs MACs
// is about 80 KiB.
const maxTaskBody = 1 << 20

// httpCode maps the manager's errors to the status codes of the contract.
func httpCode(err error) int {
	switch {
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrToken):
		return http.StatusForbidden
	case errors.Is(err, ErrNoTask), errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrStale), errors.Is(err, ErrExists), errors.Is(err, ErrFull):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// AgentHandler serves the deploy agent: GET /imaging/task and POST
// /imaging/report (docs/imaging.md, "Agent API"). It is open to every
// client, like the files: the per-attempt token is the check.
func (m *Manager) AgentHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /imaging/task", m.serveTask)
	mux.HandleFunc("POST /imaging/report", m.serveReport)
	return mux
}

func (m *Manager) serveTask(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	t, err := m.TaskFor(q.Get("mac"), q.Get("token"), m.agentVia(r))
	if err != nil {
		http.Error(w, err.Error(), httpCode(err))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// agentVia is how the agent's request reached us: the base URL it used
// (the mtftpd.http its own boot config gave it) and, with TFTPPort set,
// the TFTP server on the address it came to.
func (m *Manager) agentVia(r *http.Request) Via {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	v := Via{HTTP: scheme + "://" + r.Host}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && m.TFTPPort != "" {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil && !ap.Addr().IsUnspecified() {
			v.Server = net.JoinHostPort(ap.Addr().Unmap().String(), m.TFTPPort)
		}
	}
	return v
}

// decodeBody decodes r's JSON body, at most limit bytes, into v (strict:
// refusing unknown fields). On failure it answers 413 for a body over the
// limit, else 400 with what and notJSON before the decoder's words, and
// returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, limit int64, what, notJSON string, strict bool) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil {
		return true
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		http.Error(w, fmt.Sprintf("%s larger than %d bytes", what, limit), http.StatusRequestEntityTooLarge)
		return false
	}
	http.Error(w, what+": "+notJSON+": "+err.Error(), http.StatusBadRequest)
	return false
}

func (m *Manager) serveReport(w http.ResponseWriter, r *http.Request) {
	var rep Report
	if !decodeBody(w, r, &rep, maxReportBody, "report", "not JSON", false) {
		return
	}
	if err := m.Report(rep); err != nil {
		if errors.Is(err, ErrToken) {
			if ok, n := m.logs.Allow("report-token", time.Now()); ok {
				m.Log.Warn().Str("client", r.RemoteAddr).Str("mac", rep.MAC).Uint64("suppressed", n).Msg("imaging: report with a wrong token refused")
			}
		}
		http.Error(w, err.Error(), httpCode(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Session is a multicast session serving an image, for GET /api/imaging
// (cmd/mtftpd fills it from the multicast server).
type Session struct {
	Dialect   string    `json:"dialect"`
	File      string    `json:"file"`
	Group     string    `json:"group"`
	Receivers int       `json:"receivers"`
	Blocks    int       `json:"blocks"`
	Position  int       `json:"position"`
	Start     time.Time `json:"start"`
	// Size is the file's bytes; WireBytes what the session sent so far
	// (data and repairs), RateMBps its average since Start, WireRatio
	// WireBytes ÷ Size. ETASeconds estimates the time until all are done:
	// the file's bytes not yet sent once, at RateMBps (repairs to come
	// are not counted); -1 before anything was sent.
	Size       int64   `json:"size"`
	WireBytes  int64   `json:"wire_bytes"`
	RateMBps   float64 `json:"rate_MBps"`
	WireRatio  float64 `json:"wire_ratio"`
	ETASeconds float64 `json:"eta_seconds"`
}

// SessionStats fills the derived fields from the blocks sent (repairs
// among them) of blockSize bytes, at now.
func (s *Session) SessionStats(sent, repairs uint64, blockSize int, now time.Time) {
	s.WireBytes = int64(sent) * int64(blockSize)
	s.ETASeconds = -1
	elapsed := now.Sub(s.Start).Seconds()
	if s.WireBytes == 0 || elapsed <= 0 || s.Size <= 0 {
		return
	}
	s.RateMBps = float64(s.WireBytes) / elapsed / 1e6
	s.WireRatio = float64(s.WireBytes) / float64(s.Size)
	left := max(0, s.Size-int64(sent-min(repairs, sent))*int64(blockSize))
	s.ETASeconds = float64(left) / (s.RateMBps * 1e6)
}

// Overview is the GET /api/imaging body.
type Overview struct {
	Tasks    []TaskStatus    `json:"tasks"`
	Machines []MachineStatus `json:"machines"`
	Sessions []Session       `json:"sessions"`
}

// AdminHandler serves GET /api/imaging, POST /api/imaging/tasks and
// DELETE /api/imaging/tasks/<name> (docs/imaging.md, "Admin API"). The
// changes need "Authorization: Bearer <token>"; with token "" they are
// refused. sessions, if set, lists the multicast sessions of images.
func (m *Manager) AdminHandler(token string, sessions func() []Session) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/imaging", func(w http.ResponseWriter, r *http.Request) {
		var o Overview
		o.Tasks, o.Machines = m.Status()
		o.Sessions = []Session{}
		if sessions != nil {
			o.Sessions = sessions()
		}
		writeJSON(w, http.StatusOK, o)
	})
	admin := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if token == "" {
				http.Error(w, "task changes over HTTP need imaging.admin_token in the server's config", http.StatusForbidden)
				return
			}
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				if ok, n := m.logs.Allow("admin-token", time.Now()); ok {
					m.Log.Warn().Str("client", r.RemoteAddr).Str("method", r.Method).Uint64("suppressed", n).
						Msg("imaging: admin request with no or a wrong token refused")
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="mtftpd imaging"`)
				http.Error(w, "needs Authorization: Bearer <imaging.admin_token>", http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /api/imaging/tasks", admin(func(w http.ResponseWriter, r *http.Request) {
		var t Task
		if !decodeBody(w, r, &t, maxTaskBody, "task", "not JSON as in [[imaging.task]]", true) {
			return
		}
		if err := m.AddTask(t); err != nil {
			http.Error(w, err.Error(), httpCode(err))
			return
		}
		tasks, _ := m.Status()
		for _, x := range tasks {
			if x.Name == t.Name {
				writeJSON(w, http.StatusCreated, x)
				return
			}
		}
		w.WriteHeader(http.StatusCreated)
	}))
	mux.HandleFunc("DELETE /api/imaging/tasks/{name}", admin(func(w http.ResponseWriter, r *http.Request) {
		if err := m.Cancel(r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), httpCode(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	return mux
}

// Collector exports the manager's metrics: mtftpd_imaging_machines by
// state, mtftpd_imaging_bytes_written_total (as the agents reported it)
// and the mtftpd_imaging_deploy_seconds histogram.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Manager }

var (
	machinesDesc = prometheus.NewDesc("mtftpd_imaging_machines", "Machine records of reimaging tasks, by state.", []string{"state"}, nil)
	writtenDesc  = prometheus.NewDesc("mtftpd_imaging_bytes_written_total", "Bytes the deploy agents reported written to disks.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- writtenDesc
	c.m.hist.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	counts := map[string]int{}
	m.mu.Lock()
	for _, r := range m.machines {
		counts[r.State]++
	}
	written := m.written
	m.mu.Unlock()
	for _, s := range States {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(counts[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(writtenDesc, prometheus.CounterValue, float64(written))
	m.hist.Collect(ch)
}
