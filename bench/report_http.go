package bench

import (
	"fmt"
	"time"
)

// ---------------------------------------------------------------- http

// HTTPRun is one run of scripts/bench-http.sh: timed curl downloads of
// one file from mtftpd's HTTP mirror and from nginx, alternating.
type HTTPRun struct {
	Date    time.Time    `json:"date"`
	Host    Host         `json:"host"`
	FileMiB int          `json:"file_mib"`
	Runs    int          `json:"runs"` // timed downloads per server
	ClkTck  int          `json:"clk_tck"`
	Nginx   string       `json:"nginx"` // nginx -v
	Servers []HTTPServer `json:"servers"`
}

// HTTPServer is one server's timed downloads.
type HTTPServer struct {
	Name     string    `json:"name"`
	Speeds   []float64 `json:"speeds_bps"` // curl's %{speed_download} of each run, bytes/s
	CPUTicks int64     `json:"cpu_ticks"`  // user+system clock ticks of the server and its children over the runs
}

// MedianMBps is the median download rate in MB/s.
func (s HTTPServer) MedianMBps() float64 { return median(s.Speeds) / 1e6 }

// Row is the server's table row.
func (r *HTTPRun) Row(s HTTPServer) []string {
	runs := ""
	for _, v := range s.Speeds {
		runs += round(v/1e6, 0) + " "
	}
	gib := float64(r.Runs) * float64(r.FileMiB) / 1024
	return []string{s.Name, round(s.MedianMBps(), 0), runs[:max(0, len(runs)-1)],
		round(float64(s.CPUTicks)/float64(max(1, r.ClkTck))/gib, 2)}
}

// Ratio is the first server's median over the second's (mtftpd / nginx).
func (r *HTTPRun) Ratio() string {
	if len(r.Servers) < 2 || r.Servers[1].MedianMBps() == 0 {
		return "n/a"
	}
	return round(r.Servers[0].MedianMBps()/r.Servers[1].MedianMBps(), 2)
}

// ---------------------------------------------------------------- status

// StatusRun is one run of scripts/bench-status.sh: TFTP throughput with
// the status page closed and open, in alternating pairs.
type StatusRun struct {
	Date        time.Time    `json:"date"`
	Host        Host         `json:"host"`
	Clients     int          `json:"clients"`
	Viewers     int          `json:"viewers"`
	Profile     string       `json:"profile"`
	SizeMiB     int          `json:"size_mib"`
	Duration    string       `json:"duration"` // of each run
	ClkTck      int          `json:"clk_tck"`
	Pairs       []StatusPair `json:"pairs"`
	IdleTicks   int64        `json:"idle_cpu_ticks"` // the server's, viewers open and no transfers
	IdleSeconds int          `json:"idle_seconds"`
}

// StatusPair is one run with the page closed and one with it open.
type StatusPair struct {
	Off StatusFig `json:"off"`
	On  StatusFig `json:"on"`
}

// StatusFig is one `mtftpd bench tftp` run and the server's CPU during it.
type StatusFig struct {
	MBps     float64 `json:"aggregate_mbps"`
	Bytes    int64   `json:"bytes"`
	CPUTicks int64   `json:"server_cpu_ticks"`
}

// cpuPerGB is the server's CPU seconds per GB delivered, as shown.
func (r *StatusRun) cpuPerGB(f StatusFig) float64 {
	if f.Bytes <= 0 {
		return 0
	}
	return roundTo(float64(f.CPUTicks)/float64(max(1, r.ClkTck))/(float64(f.Bytes)/1e9), 2)
}

func (p StatusPair) ratio() float64 {
	return ratioRounded(roundTo(p.On.MBps, 1), roundTo(p.Off.MBps, 1), 4)
}

// Rows are the pairs' table rows.
func (r *StatusRun) Rows() [][]string {
	var out [][]string
	for i, p := range r.Pairs {
		out = append(out, []string{fmt.Sprint(i + 1), round(p.Off.MBps, 1), round(p.On.MBps, 1), round(p.ratio(), 4),
			round(r.cpuPerGB(p.Off), 2), round(r.cpuPerGB(p.On), 2)})
	}
	return out
}

// Medians are the medians over the pairs: ratio, CPU s/GB off and on.
func (r *StatusRun) Medians() map[string]string {
	var ratio, off, on []float64
	for _, p := range r.Pairs {
		ratio = append(ratio, p.ratio())
		off = append(off, r.cpuPerGB(p.Off))
		on = append(on, r.cpuPerGB(p.On))
	}
	return map[string]string{"ratio": round(median(ratio), 4), "off": round(median(off), 2), "on": round(median(on), 2)}
}

// IdleMsPerSec is the server's CPU milliseconds per second serving the
// pages with no transfers running.
func (r *StatusRun) IdleMsPerSec() string {
	return round(float64(r.IdleTicks)/float64(max(1, r.ClkTck))/float64(max(1, r.IdleSeconds))*1000, 1)
}

// roundTo rounds v to prec decimals.
func roundTo(v float64, prec int) float64 { return ratioRounded(v, 1, prec) }
