package bench

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// The benchmark scripts (scripts/bench-*.sh) run servers and clients and
// write what they measured as one JSON document per run; Render turns that
// into the markdown of docs/benchmarks*.md and bench-out/*.md with the
// templates in report/. The scripts only measure, the templates only
// format: a change of wording needs no lab run (the golden tests in
// report_test.go render testdata/report-*.json).

//go:embed report/*.tmpl
var reportFS embed.FS

// ErrReportKind is returned by Render for a kind it has no template for.
var ErrReportKind = errors.New("bench report: unknown kind")

// MaxReportBytes bounds a run document: the largest (bench-peers, its
// bench tftp reports inline) is about 200 KB.
const MaxReportBytes = 64 << 20

// ReportKinds lists the kinds Render knows, for usage texts.
var ReportKinds = []string{"peers", "dhcp", "unicast", "mcast", "image", "http", "status"}

var reportTmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"ratio": ratioText,
	"join":  strings.Join,
	"f":     func(prec int, v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) },
	"utc":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"add":   func(a, b int) int { return a + b },
	"mb":    mbText,
	"trim":  strings.TrimSpace,
	"row":   tableRow,
	"list":  func(s ...string) []string { return s },
}).ParseFS(reportFS, "report/*.tmpl"))

// Render decodes the run document in of the given kind (unknown fields
// are an error: a misspelt key would silently print as empty) and writes
// its markdown to w.
func Render(w io.Writer, kind string, in io.Reader) error {
	var run any
	switch kind {
	case "peers":
		run = new(PeersRun)
	case "dhcp":
		run = new(DHCPRun)
	case "unicast":
		run = new(UnicastRun)
	case "mcast":
		run = new(MCastRun)
	case "image":
		run = new(ImageRun)
	case "http":
		run = new(HTTPRun)
	case "status":
		run = new(StatusRun)
	default:
		return fmt.Errorf("%w %q (known: %s)", ErrReportKind, kind, strings.Join(ReportKinds, ", "))
	}
	lr := &io.LimitedReader{R: in, N: MaxReportBytes + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	if err := dec.Decode(run); err != nil {
		return fmt.Errorf("bench report %s: %w", kind, err)
	}
	if lr.N <= 0 {
		return fmt.Errorf("bench report %s: run document larger than %d bytes", kind, MaxReportBytes)
	}
	var buf bytes.Buffer
	if err := reportTmpl.ExecuteTemplate(&buf, kind+".md.tmpl", run); err != nil {
		return fmt.Errorf("bench report %s: %w", kind, err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// tableRow is cells as a markdown table row, an empty cell as "| |".
func tableRow(cells []string) string {
	var b strings.Builder
	for _, c := range cells {
		b.WriteString("| ")
		if c != "" {
			b.WriteString(c + " ")
		}
	}
	b.WriteString("|")
	return b.String()
}

// ratioText is a/b as "N.NN×", or "n/a" unless both are numbers above 0
// (the scripts' awk ratio: a cell may be empty or "n/a").
func ratioText(a, b any) string {
	x, ok1 := num(a)
	y, ok2 := num(b)
	if !ok1 || !ok2 || x <= 0 || y <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", x/y)
}

func num(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case int:
		return float64(v), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return f, err == nil
	}
	return 0, false
}

// Host is the machine a run was measured on.
type Host struct {
	Kernel string `json:"kernel"`
	CPU    string `json:"cpu"` // model name
	CPUs   int    `json:"cpus"`
}

// median of vs; 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }

// ---------------------------------------------------------------- peers

// PeersRun is one run of scripts/bench-peers.sh: mtftpd and the TFTP
// servers people use today at the same points, and bench-dhcp.sh's run.
type PeersRun struct {
	Date        time.Time   `json:"date"`
	TFTPSeconds int         `json:"tftp_seconds"`
	Host        Host        `json:"host"`
	Version     string      `json:"version"`
	HPA         string      `json:"tftpd_hpa"` // versions, "n/a" when not run
	Atftpd      string      `json:"atftpd"`
	Dnsmasq     string      `json:"dnsmasq"`
	Prefix      string      `json:"prefix"`
	SrvNS       string      `json:"srv_ns"`
	CliNS       string      `json:"cli_ns"`
	SrvAddr     string      `json:"srv_addr"`
	Sources     string      `json:"sources"`
	FileMiB     int         `json:"file_mib"`
	SHA256      string      `json:"sha256"`
	PointMax    int         `json:"point_max_seconds"`
	Plot        string      `json:"plot"`  // the PNG's file name
	Notes       string      `json:"notes"` // the hand-written section, markers included
	Points      []PeerPoint `json:"points"`
	DHCP        *DHCPRun    `json:"dhcp"` // nil: not run
	Commands    []string    `json:"commands"`
}

// PeerPoint is one server at one profile and client count.
type PeerPoint struct {
	Server            string      `json:"server"`
	Profile           string      `json:"profile"`
	Clients           int         `json:"clients"`
	Report            *TFTPReport `json:"report"` // nil: the point gave no report (Note says why)
	Note              string      `json:"note,omitempty"`
	ServerCPU         float64     `json:"server_cpu_seconds"`
	RSSKiB            int64       `json:"peak_anon_rss_kib"`
	HWMKiB            int64       `json:"vmhwm_kib"`
	SrvDrops          [3]int64    `json:"srv_udp_drops"` // InErrors RcvbufErrors SndbufErrors
	CliDrops          [3]int64    `json:"cli_udp_drops"`
	ServerRetransmits *int64      `json:"server_retransmits"` // nil: the server does not log them
}

// peerProfiles is the order of the report's tables, with their titles.
var peerProfiles = []struct{ Name, Title string }{
	{"bios", "BIOS profile: RRQ blksize=1468, lock-step"},
	{"w64", "blksize 1468 + windowsize 64 (custom profile; servers without windowsize answer lock-step)"},
	{"uefi", "UEFI profile: tsize probe aborted with ERROR 8, then RRQ blksize=1468 windowsize=4"},
	{"ipxe", "iPXE profile: RRQ blksize=1432 tsize=0, lock-step"},
	{"linux", "linux profile: RRQ blksize=65464 windowsize=64"},
	{"b512", "blksize 512 (custom profile), lock-step"},
}

// peerServers are the servers mtftpd is measured against: BestPeer picks
// among them.
var peerServers = []string{"tftpd-hpa", "atftpd", "dnsmasq"}

// PeerTable is one profile's table.
type PeerTable struct {
	Title string
	Rows  [][]string
}

// Tables are the TFTP tables, one per profile that has points, rows in the
// order the points ran grouped by client count.
func (r *PeersRun) Tables() []PeerTable {
	var out []PeerTable
	for _, p := range peerProfiles {
		var counts []int
		for _, pt := range r.Points {
			if pt.Profile == p.Name && !slices.Contains(counts, pt.Clients) {
				counts = append(counts, pt.Clients)
			}
		}
		if len(counts) == 0 {
			continue
		}
		t := PeerTable{Title: p.Title}
		for _, n := range counts {
			for i := range r.Points {
				pt := &r.Points[i]
				if pt.Profile != p.Name || pt.Clients != n {
					continue
				}
				t.Rows = append(t.Rows, r.row(pt))
			}
		}
		out = append(out, t)
	}
	return out
}

func (r *PeersRun) row(pt *PeerPoint) []string {
	n := strconv.Itoa(pt.Clients)
	if pt.Report == nil {
		note := pt.Note
		if note == "" {
			note = "not run"
		}
		cells := []string{n, pt.Server, note}
		return append(cells, make([]string, 20)...)
	}
	key := pt.Server + "/" + pt.Profile + "/" + n
	ref := pt.Profile + "/" + n
	F := func(c string) string { return r.F(key, c) }
	return []string{n, pt.Server, F("mbps"), ratioText(r.F("mtftpd/"+ref, "mbps"), F("mbps")),
		F("p50"), F("p95"), F("p99"), F("fair"), ratioText(F("p99"), r.F("mtftpd/"+ref, "p99")),
		F("done"), F("failed"), F("retrans"), F("sretx"), F("timeouts"), F("cpu"), F("usblk"), F("benchcpu"),
		F("rss"), F("hwm"), F("sdrops"), F("cdrops"), F("neg"), F("errors")}
}

// point finds SERVER/PROFILE/CLIENTS.
func (r *PeersRun) point(key string) *PeerPoint {
	for i := range r.Points {
		pt := &r.Points[i]
		if pt.Report != nil && fmt.Sprintf("%s/%s/%d", pt.Server, pt.Profile, pt.Clients) == key {
			return pt
		}
	}
	return nil
}

// F is one figure of the point SERVER/PROFILE/CLIENTS as the tables show
// it, "" when that point has no report: mbps, p50, p95, p99, done, failed,
// retrans, timeouts, cpu, benchcpu, rss, hwm, sdrops, cdrops, neg, errors,
// sretx, fair (p99 ÷ p50 of the downloads), usblk (server CPU µs per DATA
// block delivered).
func (r *PeersRun) F(key, col string) string {
	pt := r.point(key)
	if pt == nil {
		return ""
	}
	rep := pt.Report
	drops := func(d [3]int64) string { return fmt.Sprintf("%d/%d/%d", d[0], d[1], d[2]) }
	switch col {
	case "mbps":
		return round(math.Round(rep.AggregateMBps*10)/10, -1)
	case "p50":
		return round(math.Round(rep.TransferMs.P50), 0)
	case "p95":
		return round(math.Round(rep.TransferMs.P95), 0)
	case "p99":
		return round(math.Round(rep.TransferMs.P99), 0)
	case "done":
		return fmt.Sprintf("%d/%d", rep.Completed, rep.Transfers)
	case "failed":
		return strconv.Itoa(rep.Failed)
	case "retrans":
		return strconv.Itoa(rep.Duplicates + rep.OutOfOrder)
	case "timeouts":
		return strconv.Itoa(rep.Timeouts)
	case "cpu":
		return round(pt.ServerCPU, 2)
	case "benchcpu":
		s := round(math.Round(rep.ClientCPUSeconds*100)/100, -1)
		if rep.Engine == EngineBatch {
			s += " (batch)"
		}
		return s
	case "rss":
		return round(float64(pt.RSSKiB)/1024, 1)
	case "hwm":
		return round(float64(pt.HWMKiB)/1024, 1)
	case "sdrops":
		return drops(pt.SrvDrops)
	case "cdrops":
		return drops(pt.CliDrops)
	case "neg":
		return strings.Join(slices.Sorted(maps.Keys(rep.Negotiated)), " ")
	case "errors":
		var s string
		if rep.Failed != 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(rep.Errors)) {
				parts = append(parts, fmt.Sprintf("%s %d", k, rep.Errors[k]))
			}
			s = strings.Join(parts, ", ")
		}
		if rep.Stopped != "" {
			s += " (" + rep.Stopped + ")"
		}
		return s
	case "fair":
		return ratioText(rep.TransferMs.P99, rep.TransferMs.P50)
	case "usblk":
		// the blocks the swarm received: full ones plus each completed
		// download's short last block
		if rep.Profile.BlockSize <= 0 || rep.Bytes <= 0 {
			return "n/a"
		}
		blocks := rep.Bytes/int64(rep.Profile.BlockSize) + int64(rep.Completed)
		return round(pt.ServerCPU*1e6/float64(blocks), 1)
	case "sretx":
		if pt.ServerRetransmits == nil {
			return "n/a"
		}
		return strconv.FormatInt(*pt.ServerRetransmits, 10)
	}
	return "?" + col
}

// BestPeer is the key SERVER/PROFILE/CLIENTS of the fastest peer
// (aggregate MB/s) at PROFILE/CLIENTS, "" when no peer has that point.
func (r *PeersRun) BestPeer(ref string) string {
	best, bestMBps := "", 0.0
	for _, srv := range peerServers {
		if pt := r.point(srv + "/" + ref); pt != nil && pt.Report.AggregateMBps > bestMBps {
			best, bestMBps = srv+"/"+ref, pt.Report.AggregateMBps
		}
	}
	return best
}

// WorstFairness is the highest p99 ÷ p50 of the downloads over the
// server's points with 10 clients or more, and where: "n/a" without one.
func (r *PeersRun) WorstFairness(server string) string {
	worst, where := 0.0, ""
	for i := range r.Points {
		pt := &r.Points[i]
		if pt.Server != server || pt.Report == nil || pt.Clients < 10 || pt.Report.TransferMs.P50 <= 0 {
			continue
		}
		if f := pt.Report.TransferMs.P99 / pt.Report.TransferMs.P50; f > worst {
			worst, where = f, fmt.Sprintf("%s/%d", pt.Profile, pt.Clients)
		}
	}
	if where == "" {
		return "n/a"
	}
	return fmt.Sprintf("%.2f (%s)", worst, where)
}

// Servers are the servers that have points, in the order they ran.
func (r *PeersRun) Servers() []string {
	var out []string
	for _, pt := range r.Points {
		if !slices.Contains(out, pt.Server) {
			out = append(out, pt.Server)
		}
	}
	return out
}

// RSSLimitMiB is issue 7's memory compass for n clients: 64 MiB plus
// 20 KiB per client.
func (r *PeersRun) RSSLimitMiB(n int) string { return round(64+float64(n)*20/1024, 1) }

// ---------------------------------------------------------------- dhcp

// DHCPRun is one run of scripts/bench-dhcp.sh: a DHCP storm against each
// server at each concurrency.
type DHCPRun struct {
	Date          time.Time `json:"date"`
	Host          Host      `json:"host"`
	Version       string    `json:"version"`
	Dnsmasq       string    `json:"dnsmasq"` // "not installed" when absent
	Kea           string    `json:"kea"`
	Clients       int       `json:"clients"`
	Concurrency   []int     `json:"concurrency"`
	Servers       []string  `json:"servers"`
	SrvNS         string    `json:"srv_ns"`
	CliNS         string    `json:"cli_ns"`
	RangeStart    string    `json:"range_start"`
	RangeEnd      string    `json:"range_end"`
	LeaseDevice   string    `json:"lease_device"` // where the lease files were
	StormDuration int       `json:"storm_duration_seconds"`
	// StormEnv is the environment the storm ran with ("GOMAXPROCS=1");
	// "" in runs from before it was recorded.
	StormEnv string    `json:"storm_env,omitempty"`
	Rows     []DHCPRow `json:"rows"`
	Logs     []DHCPLog `json:"logs"`
	Commands []string  `json:"commands"`
	// MTFTPDBase is the binary of the "mtftpd-base" rows (MTFTPD_BASE_BIN:
	// a before/after in one run); "" without them.
	MTFTPDBase string `json:"mtftpd_base,omitempty"`
	// MTFTPDPool is mtftpd's "prefix first-last" when BENCH_POOL set one
	// other than the peers' range; "" when it is the same.
	MTFTPDPool string `json:"mtftpd_pool,omitempty"`
}

// DHCPRow is one server at one concurrency.
type DHCPRow struct {
	Server      string      `json:"server"`
	Concurrency int         `json:"concurrency"`
	Report      *DHCPReport `json:"report"`
	Note        string      `json:"note,omitempty"`
	// PeakRSSMiB is the server's VmHWM when the storm ended; nil: not
	// read (no row, or the server had gone).
	PeakRSSMiB *float64 `json:"peak_rss_mib,omitempty"`
	// ServerCPU is the CPU seconds the server used during the storm
	// (/proc/PID/stat, clock ticks); nil: not read.
	ServerCPU *float64 `json:"server_cpu_seconds,omitempty"`
}

// DHCPLog is what one server logged besides start-up and shut-down.
type DHCPLog struct {
	Title string   `json:"title"` // "- mtftpd mtftpd-c20: 3 warn/error lines, first 5:"
	Lines []string `json:"lines"`
}

func (r *DHCPRun) find(server string, conc int) *DHCPRow {
	for i := range r.Rows {
		if r.Rows[i].Server == server && r.Rows[i].Concurrency == conc {
			return &r.Rows[i]
		}
	}
	return nil
}

// Cells are the table cells of server at conc after the first two.
func (r *DHCPRun) Cells(server string, conc int) []string {
	row := r.find(server, conc)
	if row == nil || row.Report == nil {
		note := "n/a"
		if row != nil && row.Note != "" {
			note = row.Note
		}
		return append([]string{note}, make([]string, 11)...)
	}
	rss := "n/a"
	if row.PeakRSSMiB != nil {
		rss = round(*row.PeakRSSMiB, 1)
	}
	rep := row.Report
	failed := "0"
	if rep.Failed != 0 {
		failed = fmt.Sprintf("%d (%s)", rep.Failed, counts(rep.Failures))
	}
	// CPU per ACKed exchange, in µs: the server's and the storm's own.
	// The server's is measured when recorded (0: under one 10 ms tick);
	// the storm's is 0 only in reports from before it was measured.
	perExchange := func(cpu float64, measured bool) string {
		if !measured || rep.Completed == 0 {
			return "n/a"
		}
		return strconv.Itoa(int(math.Round(cpu / float64(rep.Completed) * 1e6)))
	}
	var serverCPU float64
	if row.ServerCPU != nil {
		serverCPU = *row.ServerCPU
	}
	return []string{round(math.Round(rep.ExchangesPerSec*10)/10, -1),
		round(math.Round(rep.LatencyMs.P50*100)/100, -1), round(math.Round(rep.LatencyMs.P99*100)/100, -1),
		fmt.Sprintf("%d/%d", rep.Completed, rep.Clients), failed, strconv.Itoa(rep.NAKs),
		strconv.Itoa(rep.DuplicateOffers), strconv.Itoa(rep.DuplicateAcks), strconv.Itoa(rep.Retransmits),
		perExchange(serverCPU, row.ServerCPU != nil), perExchange(rep.ClientCPUSeconds, rep.ClientCPUSeconds > 0), rss}
}

// Ratio is mtftpd's exchanges/s over other's at conc, "n/a" without both.
func (r *DHCPRun) Ratio(other string, conc int) string { return r.RatioOf("mtftpd", other, conc) }

// RatioOf is server a's exchanges/s over b's at conc, "n/a" without both.
func (r *DHCPRun) RatioOf(a, b string, conc int) string {
	rate := func(s string) string {
		if row := r.find(s, conc); row != nil && row.Report != nil {
			return round(math.Round(row.Report.ExchangesPerSec*10)/10, -1)
		}
		return ""
	}
	return ratioText(rate(a), rate(b))
}

// HasBase reports whether the run has mtftpd-base rows.
func (r *DHCPRun) HasBase() bool { return slices.Contains(r.Servers, "mtftpd-base") }

// counts is "k n, k n" in key order.
func counts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------- unicast

// UnicastRun is one run of scripts/bench-unicast.sh: one client at a time
// downloading one file from mtftpd, tftpd-hpa and atftpd.
type UnicastRun struct {
	Date       time.Time      `json:"date"`
	Host       Host           `json:"host"`
	Version    string         `json:"version"`
	Bin        string         `json:"bin"`
	HPA        string         `json:"tftpd_hpa"`
	Atftpd     string         `json:"atftpd"`
	AtftpdRoot string         `json:"atftpd_root"`
	Atftp      string         `json:"atftp"`
	Curl       string         `json:"curl"`
	Size       int64          `json:"size"`
	SHA256     string         `json:"sha256"`
	Runs       int            `json:"runs"`
	CurlRuns   int            `json:"curl_runs"`
	CGKind     string         `json:"cg_kind"` // none, v1, v2
	Ports      string         `json:"ports"`   // "16969 mtftpd, …"
	Servers    []string       `json:"servers"`
	Configs    []string       `json:"configs"`
	Phases     []UnicastPhase `json:"phases"`
}

// UnicastPhase is one network setup: loopback, or the namespace lab.
type UnicastPhase struct {
	Name       string            `json:"name"` // loopback, netns
	Title      string            `json:"title"`
	Sysctl     string            `json:"sysctl,omitempty"`
	Results    []UnicastResult   `json:"results"`
	Transfers  []UnicastTransfer `json:"mtftpd_transfers"` // mtftpd's transfer log lines of the timed runs
	ServerCmds []string          `json:"server_commands"`
	ClientCmds []string          `json:"client_commands"` // "CMD   # config"
}

// UnicastResult is one server × client configuration: wall and server CPU
// seconds of each timed run.
type UnicastResult struct {
	Server string    `json:"server"`
	Config string    `json:"config"`
	Wall   []float64 `json:"wall"`
	CPU    []float64 `json:"cpu"`
}

// UnicastTransfer is the part of one mtftpd transfer log line the report uses.
type UnicastTransfer struct {
	Config     string `json:"config"`
	BlockSize  int    `json:"blksize"`
	WindowSize int    `json:"windowsize"`
	Datagrams  *int64 `json:"datagrams"`
	Syscalls   *int64 `json:"syscalls"`
}

func (p *UnicastPhase) result(srv, cfg string) *UnicastResult {
	for i := range p.Results {
		if p.Results[i].Server == srv && p.Results[i].Config == cfg && len(p.Results[i].Wall) > 0 {
			return &p.Results[i]
		}
	}
	return nil
}

// MBps is size ÷ the median wall time of srv at cfg, "n/a" when not run.
func (r *UnicastRun) MBps(p *UnicastPhase, srv, cfg string) string {
	res := p.result(srv, cfg)
	if res == nil {
		return "n/a"
	}
	return round(float64(r.Size)/median(res.Wall)/1e6, 1)
}

// CPUs is the median server CPU per run of each server at cfg, "a / b / c".
func (r *UnicastRun) CPUs(p *UnicastPhase, cfg string) string {
	var parts []string
	for _, s := range r.Servers {
		if res := p.result(s, cfg); res != nil {
			parts = append(parts, round(median(res.CPU), 3))
		} else {
			parts = append(parts, "n/a")
		}
	}
	return strings.Join(parts, " / ")
}

func (p *UnicastPhase) transfers(cfg string) []UnicastTransfer {
	var out []UnicastTransfer
	for _, t := range p.Transfers {
		if t.Config == cfg {
			out = append(out, t)
		}
	}
	return out
}

// Negotiated is the blksize/windowsize of mtftpd's last transfer at cfg.
func (p *UnicastPhase) Negotiated(cfg string) string {
	ts := p.transfers(cfg)
	if len(ts) == 0 {
		return "?"
	}
	t := ts[len(ts)-1]
	return fmt.Sprintf("%d/%d", t.BlockSize, t.WindowSize)
}

// DatagramsPerSyscall is how many datagrams mtftpd sent per send syscall
// at cfg, with the totals.
func (p *UnicastPhase) DatagramsPerSyscall(cfg string) string {
	ts := p.transfers(cfg)
	var d, s int64
	for _, t := range ts {
		if t.Datagrams != nil {
			d += *t.Datagrams
		}
		if t.Syscalls != nil {
			s += *t.Syscalls
		}
	}
	if s == 0 {
		return fmt.Sprintf("n/a (no datagrams/syscalls fields in %d transfer lines)", len(ts))
	}
	return fmt.Sprintf("%.2f (%d datagrams / %d syscalls over %d transfers)", float64(d)/float64(s), d, s, len(ts))
}

// Raw lists "cfg / srv: wall … | cpu …" for every pair that ran.
func (r *UnicastRun) Raw(p *UnicastPhase) []string {
	var out []string
	fl := func(vs []float64, prec int) string {
		s := make([]string, len(vs))
		for i, v := range vs {
			s[i] = round(v, prec)
		}
		return strings.Join(s, " ")
	}
	for _, cfg := range r.Configs {
		for _, srv := range r.Servers {
			if res := p.result(srv, cfg); res != nil {
				out = append(out, fmt.Sprintf("%s / %s: wall %s | cpu %s", cfg, srv, fl(res.Wall, 4), fl(res.CPU, 3)))
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- mcast

// MCastRun is one run of scripts/bench-mcast.sh.
type MCastRun struct {
	Date          time.Time  `json:"date"`
	Host          Host       `json:"host"`
	RateMbit      int        `json:"rate_mbit"`
	SlowReceivers int        `json:"slow_receivers"`
	Rows          []MCastRow `json:"rows"`
}

// MCastRow is one scenario with one server and N receivers.
type MCastRow struct {
	Scenario  string  `json:"scenario"`
	Server    string  `json:"server"`
	Receivers int     `json:"receivers"`
	Seconds   float64 `json:"seconds"`
	TXBytes   int64   `json:"tx_bytes"`  // the server's eth0 during the run
	FileSize  int64   `json:"file_size"` // bytes
	Failed    int     `json:"failed"`    // receivers without the verified file
}

// TXRatio is the server's TX bytes over the file size.
func (m MCastRow) TXRatio() float64 {
	if m.FileSize <= 0 {
		return 0
	}
	return float64(m.TXBytes) / float64(m.FileSize)
}

// TBF is "S receivers take X× the time of one" when the tbf scenario ran.
func (r *MCastRun) TBF() string {
	var one, many float64
	for _, m := range r.Rows {
		if m.Scenario != "tbf" {
			continue
		}
		if m.Receivers == 1 {
			one = m.Seconds
		} else {
			many = m.Seconds
		}
	}
	if one <= 0 || many <= 0 {
		return ""
	}
	return fmt.Sprintf("tbf %d Mbit/s: %d receivers take %.2f× the time of one", r.RateMbit, r.SlowReceivers, many/one)
}
