package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// ---------------------------------------------------------------- image

// ImageRun is one run of scripts/bench-image.sh: issue 12's disk image
// numbers (docs/benchmarks-image.md). A part that did not run (PARTS) is
// null and its section is left out. The script measures; every ratio,
// MB figure and met/missed verdict is computed here.
type ImageRun struct {
	Date        time.Time   `json:"date"`
	Host        Host        `json:"host"`
	MemTotalKiB int64       `json:"mem_total_kib"`
	Version     string      `json:"version"`
	LoadStart   string      `json:"load_start"` // /proc/loadavg's three figures
	LoadEnd     string      `json:"load_end"`
	BusyMax     float64     `json:"busy_max"` // CPUs of other work a timed part waits to fall under
	QuietWait   int         `json:"quiet_wait_seconds"`
	Receivers   int         `json:"receivers"`
	RawGB       int         `json:"raw_gb"`
	DataMB      int         `json:"data_mb"`
	RoomDataMB  int         `json:"room_data_mb"`
	SmallGB     int         `json:"small_gb"`
	LargeGB     int         `json:"large_gb"`
	Repeat      int         `json:"repeat"`
	Server      string      `json:"server"` // the lab server's address
	Images      ImageSet    `json:"images"`
	RoomZstd    int64       `json:"room_zst_size"` // bytes of the room disk as zstd -T0 -3
	Create      []ImageCrow `json:"create"`        // nil: not run
	One         *ImageOne   `json:"one"`
	RSS         *ImageRSS   `json:"rss"`
	Room        *ImageRoom  `json:"room"`
	QuietLog    []string    `json:"quiet_log"` // waits for a quiet machine longer than 4 s
	Notes       ImageNotes  `json:"notes"`
}

// ImageNotes are the hand-written paragraphs of the previous report
// (between <!-- notes NAME --> and <!-- /notes NAME -->), kept across runs.
type ImageNotes struct {
	Room string `json:"room"`
	RSS  string `json:"rss"`
}

// ImageSet holds the test images; Large only when the memory part ran.
type ImageSet struct {
	Issue ImageFigures  `json:"issue"`
	Small ImageFigures  `json:"small"`
	Room  ImageFigures  `json:"room"`
	Large *ImageFigures `json:"large"`
}

// ImageFigures is one raw disk and its mtftpd image (`image info --json`'s
// file_size, data_size, chunks and holes).
type ImageFigures struct {
	RawBytes   int64 `json:"raw_bytes"`
	DataBytes  int64 `json:"data_bytes"` // data written into the raw disk
	Extents    int   `json:"extents"`
	FileSize   int64 `json:"file_size"`
	StoredData int64 `json:"data_size"` // the image's compressed data chunks
	Chunks     int   `json:"chunks"`
	Holes      int   `json:"holes"`
}

// DataMiB is the raw disk's data in MiB, as the tables show it.
func (f ImageFigures) DataMiB() string { return round(float64(f.DataBytes)/(1<<20), 0) }

// DataChunks are the chunks that are not holes.
func (f ImageFigures) DataChunks() int { return f.Chunks - f.Holes }

// IndexBytes is what of the image is not data: header and index.
func (f ImageFigures) IndexBytes() int64 { return f.FileSize - f.StoredData }

// Timed is one /usr/bin/time measurement (the best of several where the
// part says so); OtherCPUs is what other work kept busy meanwhile.
type Timed struct {
	Wall      float64  `json:"wall_seconds"`
	User      float64  `json:"user_seconds"`
	Sys       float64  `json:"sys_seconds"`
	MaxRSSKiB int64    `json:"max_rss_kib"`
	OtherCPUs *float64 `json:"other_cpus,omitempty"`
}

// CPU is user + system seconds.
func (t Timed) CPU() float64 { return t.User + t.Sys }

// ImageCrow is one input of the create part: zstd -T0 -3 and image create
// on the same file.
type ImageCrow struct {
	Input      string `json:"input"` // sparse, full, dense
	Bytes      int64  `json:"bytes"`
	Zstd       Timed  `json:"zstd"`
	ZstdSize   int64  `json:"zstd_size"`
	Create     Timed  `json:"create"`
	CreateSize int64  `json:"create_size"`
}

var crowLabels = map[string]string{
	"sparse": "raw disk, holes unallocated", "full": "same disk fully allocated", "dense": "its data alone",
}

// Rows are the create table's two rows of this input.
func (c ImageCrow) Rows() [2][]string {
	other := func(t Timed) string {
		if t.OtherCPUs == nil {
			return "?"
		}
		return round(*t.OtherCPUs, 2)
	}
	r := ratioRounded(c.Zstd.Wall, c.Create.Wall, 2)
	return [2][]string{
		{fmt.Sprintf("%s (%s MB)", crowLabels[c.Input], mbText(c.Bytes)), "zstd -T0 -3", round(c.Zstd.Wall, 2) + " s",
			round(c.Zstd.CPU(), 1), other(c.Zstd), round(float64(c.Bytes)/c.Zstd.Wall/1e6, 0), mbText(c.ZstdSize) + " MB", ""},
		{"", "image create", round(c.Create.Wall, 2) + " s", round(c.Create.CPU(), 1), other(c.Create),
			round(float64(c.Bytes)/c.Create.Wall/1e6, 0), mbText(c.CreateSize) + " MB",
			fmt.Sprintf("**%s×** (%s); CPU %s×", round(r, 2), metText(r >= 0.8), round(c.Create.CPU()/c.Zstd.CPU(), 2))},
	}
}

// ImageOne is the one-receiver part: the issue image to a loop device.
type ImageOne struct {
	Net      Timed        `json:"net"`       // get --multicast of the image file
	DDFsync  Timed        `json:"dd_fsync"`  // dd … conv=fsync
	DDDirect Timed        `json:"dd_direct"` // … oflag=direct
	Deploy   Timed        `json:"deploy"`
	Phases   []ImagePhase `json:"deploy_phases"` // of the best deploy, in its order
}

// ImagePhase is one phase of `image deploy --json`.
type ImagePhase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// OneFigures are the one-receiver section's derived figures.
type OneFigures struct {
	DDFsyncMBps, DDDirectMBps, NetMBps, NetImageMBps, DeployMBps string
	Low, LowName, Ratio, Verdict, Phases                         string
}

// OneFigures derives the table and the verdict from r.One.
func (r *ImageRun) OneFigures() OneFigures {
	o, raw := r.One, float64(r.Images.Issue.RawBytes)
	rate := func(t Timed) float64 { return math.Round(raw / t.Wall / 1e6) }
	dev := min(o.DDFsync.Wall, o.DDDirect.Wall)
	netR, devR, depR := rate(o.Net), math.Round(raw/dev/1e6), rate(o.Deploy)
	low, name := netR, "the network"
	if devR <= netR {
		low, name = devR, "the device"
	}
	ratio := ratioRounded(depR, low, 2)
	var ph []string
	for _, p := range o.Phases {
		ph = append(ph, fmt.Sprintf("%s %s s", p.Name, round(math.Round(p.Seconds*100)/100, -1)))
	}
	return OneFigures{
		DDFsyncMBps: round(rate(o.DDFsync), 0), DDDirectMBps: round(rate(o.DDDirect), 0),
		NetMBps: round(netR, 0), NetImageMBps: round(float64(r.Images.Issue.FileSize)/o.Net.Wall/1e6, 0),
		DeployMBps: round(depR, 0), Low: round(low, 0), LowName: name,
		Ratio: round(ratio, 2), Verdict: metText(ratio >= 0.8), Phases: strings.Join(ph, ", "),
	}
}

// ImageRSS is the receiver memory part: the largest of Repeat deploys of
// each image, and the unicast cost of the room image's index.
type ImageRSS struct {
	Small     ImageMem `json:"small"`
	Issue     ImageMem `json:"issue"`
	Large     ImageMem `json:"large"`
	Room      ImageMem `json:"room"`
	IndexTFTP int64    `json:"index_tftp_bytes"` // server eth0 TX of a deploy that needed only the index
	IndexHTTP int64    `json:"index_http_bytes"` // the same with --http
}

// ImageMem is one image's receiver memory.
type ImageMem struct {
	RSSKiB  int64 `json:"peak_rss_kib"`  // /usr/bin/time %M
	LiveMiB int64 `json:"live_heap_mib"` // largest live heap of GODEBUG=gctrace=1
}

// MemRows are the memory table's rows.
func (r *ImageRun) MemRows() [][]string {
	row := func(name string, gb int, f ImageFigures, m ImageMem) []string {
		return []string{name, fmt.Sprintf("%d GiB", gb), f.DataMiB() + " MiB", mbText(f.FileSize) + " MB",
			fmt.Sprintf("%d kB", m.RSSKiB), fmt.Sprintf("%d MiB", m.LiveMiB)}
	}
	im, m := r.Images, r.RSS
	large := ImageFigures{}
	if im.Large != nil {
		large = *im.Large
	}
	return [][]string{row("small", r.SmallGB, im.Small, m.Small), row("issue", r.RawGB, im.Issue, m.Issue),
		row("large", r.LargeGB, large, m.Large), row("room", r.RawGB, im.Room, m.Room)}
}

// MemRatio is "issue ÷ small" (x) with its verdict (x_v: within 10 %),
// and "large ÷ issue" (y).
func (r *ImageRun) MemRatio() map[string]string {
	x := ratioRounded(float64(r.RSS.Issue.RSSKiB), float64(r.RSS.Small.RSSKiB), 3)
	y := ratioRounded(float64(r.RSS.Large.RSSKiB), float64(r.RSS.Issue.RSSKiB), 3)
	return map[string]string{"x": round(x, 3), "x_v": metText(x >= 0.9 && x <= 1.1), "y": round(y, 3)}
}

// IndexCost is the "where eth0 bytes beyond the stream go" bullet's
// figures: the index fetches of all receivers, MB and % of both images.
func (r *ImageRun) IndexCost() map[string]string {
	n := int64(r.Receivers)
	t, h := r.RSS.IndexTFTP*n, r.RSS.IndexHTTP*n
	room, issue := float64(r.Images.Room.FileSize), float64(r.Images.Issue.FileSize)
	return map[string]string{
		"tftp_mb": mbText(t), "tftp_room": round(100*float64(t)/room, 1), "tftp_issue": round(100*float64(t)/issue, 1),
		"http_mb": mbText(h), "http_room": round(100*float64(h)/room, 1), "http_issue": round(100*float64(h)/issue, 1),
	}
}

// ImageRoom is the room part: the pipeline and mtftpd twice.
type ImageRoom struct {
	Pipe ImageRoomRun `json:"pipeline"`
	TFTP ImageRoomRun `json:"mtftpd_tftp"` // the index by TFTP
	HTTP ImageRoomRun `json:"mtftpd_http"` // the index by HTTP (--http)
}

// ImageRoomRun is one tool deploying to every receiver at once.
type ImageRoomRun struct {
	Seconds      float64  `json:"seconds"`         // launch until the last disk verified
	Written      float64  `json:"written_seconds"` // launch until the last disk written
	Verified     int      `json:"verified"`        // disks that hold the verified image
	WireBytes    int64    `json:"wire_bytes"`      // server eth0 TX during the run
	BusyCPU      float64  `json:"busy_cpu_seconds"`
	StealCPU     float64  `json:"steal_cpu_seconds"`
	ReceiversCPU float64  `json:"receivers_cpu_seconds"`
	ServerCPU    *float64 `json:"server_cpu_seconds"` // null: not measured
	RSSMaxKiB    int64    `json:"receiver_rss_max_kib"`
	RSSMedKiB    int64    `json:"receiver_rss_median_kib"`
	OtherCPUs    float64  `json:"other_cpus"` // other work just before
	// mtftpd only: from the receivers' --json and the server's log
	IndexMax  float64        `json:"index_max_seconds,omitempty"`
	VerifyMax float64        `json:"verify_max_seconds,omitempty"`
	NAKs      int64          `json:"naks,omitempty"`
	Rejoins   int64          `json:"rejoins,omitempty"`
	Moves     int64          `json:"moves,omitempty"`
	Rebuilt   int64          `json:"rebuilt,omitempty"`
	Sessions  []ImageSession `json:"sessions,omitempty"`
	Identical int            `json:"cmp_identical,omitempty"` // of three disks cmp'd against the raw disk
}

// ImageSession is the part of one "mtftp: native session" log line the
// report uses.
type ImageSession struct {
	DataShards   int64   `json:"data_shards"`
	RepairShards int64   `json:"repair_shards"`
	Passes       int64   `json:"passes"`
	NAKs         int64   `json:"naks"`
	RepairRounds int64   `json:"repair_rounds"`
	RateMBps     float64 `json:"rate_MBps"`
	DurationMs   float64 `json:"duration_ms"`
	WireBytes    int64   `json:"wire_bytes"`
	Receivers    int64   `json:"receivers"`
	Completed    int64   `json:"completed"`
}

func (v *ImageRoomRun) sum(f func(ImageSession) int64) int64 {
	var n int64
	for _, s := range v.Sessions {
		n += f(s)
	}
	return n
}

// SessionText sums up the sessions mtftpd logged in this run.
func (v *ImageRoomRun) SessionText() map[string]string {
	var d []string
	for _, s := range v.Sessions {
		d = append(d, fmt.Sprintf("%d data shards, %d repair shards, %d pass(es), %d NAKs, %d repair rounds, %s MB/s, %s s",
			s.DataShards, s.RepairShards, s.Passes, s.NAKs, s.RepairRounds,
			round(math.Round(s.RateMBps*10)/10, -1), round(math.Round(s.DurationMs/10)/100, -1)))
	}
	return map[string]string{
		"count":     fmt.Sprint(len(v.Sessions)),
		"receivers": fmt.Sprint(v.sum(func(s ImageSession) int64 { return s.Receivers })),
		"completed": fmt.Sprint(v.sum(func(s ImageSession) int64 { return s.Completed })),
		"detail":    strings.Join(d, "; "),
		"receiving": fmt.Sprintf("%d NAKs, %d rejoins, %d moves, %d shards rebuilt from parity", v.NAKs, v.Rejoins, v.Moves, v.Rebuilt),
	}
}

// roomRatios are a room run's wire ratios: eth0 ÷ what it sends, and the
// multicast stream ÷ the same.
func (r *ImageRun) roomRatios(v *ImageRoomRun, sent int64) (wire, stream float64) {
	wire = ratioRounded(float64(v.WireBytes), float64(sent), 3)
	stream = ratioRounded(float64(v.sum(func(s ImageSession) int64 { return s.WireBytes })), float64(sent), 3)
	return wire, stream
}

// RoomRows are the room table's rows: a label and the three runs' cells.
func (r *ImageRun) RoomRows() [][]string {
	rm := r.Room
	runs := []*ImageRoomRun{&rm.Pipe, &rm.TFTP, &rm.HTTP}
	sent := []int64{r.RoomZstd, r.Images.Room.FileSize, r.Images.Room.FileSize}
	cells := func(label string, f func(i int, v *ImageRoomRun) string) []string {
		row := []string{label}
		for i, v := range runs {
			row = append(row, f(i, v))
		}
		return row
	}
	fl := func(prec int, suffix string, g func(v *ImageRoomRun) float64) func(int, *ImageRoomRun) string {
		return func(_ int, v *ImageRoomRun) string { return round(g(v), prec) + suffix }
	}
	return [][]string{
		cells("time until all verified", fl(2, " s", func(v *ImageRoomRun) float64 { return v.Seconds })),
		cells("time until all written", fl(2, " s", func(v *ImageRoomRun) float64 { return v.Written })),
		cells("disks verified", func(_ int, v *ImageRoomRun) string { return fmt.Sprintf("%d / %d", v.Verified, r.Receivers) }),
		cells("server eth0 TX bytes", func(_ int, v *ImageRoomRun) string { return fmt.Sprint(v.WireBytes) }),
		cells("eth0 TX ÷ stored size", func(i int, v *ImageRoomRun) string {
			w, _ := r.roomRatios(v, sent[i])
			return round(w, 3) + "×"
		}),
		cells("multicast stream ÷ stored size", func(i int, v *ImageRoomRun) string {
			if i == 0 {
				return ""
			}
			_, s := r.roomRatios(v, sent[i])
			return round(s, 3) + "×"
		}),
		cells("CPU seconds, all receivers", fl(1, "", func(v *ImageRoomRun) float64 { return v.ReceiversCPU })),
		cells("CPU seconds, server", func(_ int, v *ImageRoomRun) string {
			if v.ServerCPU == nil {
				return "?"
			}
			return round(*v.ServerCPU, 1)
		}),
		cells("machine busy CPU seconds (of wall × CPUs)", fl(1, "", func(v *ImageRoomRun) float64 { return v.BusyCPU })),
		cells("wall × CPUs", fl(1, "", func(v *ImageRoomRun) float64 { return v.Seconds * float64(r.Host.CPUs) })),
		cells("stolen by the hypervisor, CPU seconds", fl(1, "", func(v *ImageRoomRun) float64 { return v.StealCPU })),
		cells("peak RSS of one receiver, largest (kB)", func(_ int, v *ImageRoomRun) string { return fmt.Sprint(v.RSSMaxKiB) }),
		cells("peak RSS of one receiver, median (kB)", func(_ int, v *ImageRoomRun) string { return fmt.Sprint(v.RSSMedKiB) }),
		cells("other work's CPUs just before (2 s sample)", fl(2, "", func(v *ImageRoomRun) float64 { return v.OtherCPUs })),
	}
}

// RoomVerdicts are the room's time and wire figures against issue 12's
// targets (time ≤ 0.5× the pipeline's, wire ≤ 1.05× the stored size),
// each ratio with its verdict next to it ("t", "t_v", …).
func (r *ImageRun) RoomVerdicts() map[string]string {
	rm := r.Room
	out := map[string]string{}
	le := func(key string, v, limit float64, prec int) {
		out[key] = round(v, prec)
		out[key+"_v"] = metText(v <= limit)
	}
	le("t", ratioRounded(rm.TFTP.Seconds, rm.Pipe.Seconds, 2), 0.5, 2)
	le("h", ratioRounded(rm.HTTP.Seconds, rm.Pipe.Seconds, 2), 0.5, 2)
	out["tw"] = round(ratioRounded(rm.TFTP.Seconds, rm.Pipe.Written, 2), 2)
	out["hw"] = round(ratioRounded(rm.HTTP.Seconds, rm.Pipe.Written, 2), 2)
	out["ww"] = round(ratioRounded(rm.TFTP.Written, rm.Pipe.Written, 2), 2)
	out["hww"] = round(ratioRounded(rm.HTTP.Written, rm.Pipe.Written, 2), 2)
	size := r.Images.Room.FileSize
	tw, ts := r.roomRatios(&rm.TFTP, size)
	hw, hs := r.roomRatios(&rm.HTTP, size)
	le("tftp_wire", tw, 1.05, 3)
	le("http_wire", hw, 1.05, 3)
	le("tftp_stream", ts, 1.05, 3)
	le("http_stream", hs, 1.05, 3)
	return out
}

// ratioRounded is a/b rounded to prec decimals (0 when b is 0): verdicts
// judge the figure the report shows, as the script's did.
func ratioRounded(a, b float64, prec int) float64 {
	if b == 0 {
		return 0
	}
	p := math.Pow(10, float64(prec))
	return math.Round(a/b*p) / p
}

// metText is the report's "met" or "**missed**".
func metText(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

// mbText is bytes in MB (10^6) with one decimal.
func mbText(b int64) string { return round(float64(b)/1e6, 1) }

// MemGiB is the machine's RAM in whole GiB.
func (r *ImageRun) MemGiB() string { return round(float64(r.MemTotalKiB)/(1<<20), 0) }

// ZstdRatio is the room image's size over its zstd file's.
func (r *ImageRun) ZstdRatio() string {
	return round(ratioRounded(float64(r.Images.Room.FileSize), float64(r.RoomZstd), 3), 3)
}
