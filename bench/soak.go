package bench

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The soak (scripts/soak.sh) samples the server's /metrics as it runs and
// judges, after the load has stopped and the server drained, whether
// goroutines or open file descriptors leaked. These are the Go side of it:
// one snapshot to a CSV row, and the judgement of the first and last ones.

// MaxMetricsBytes bounds one /metrics snapshot: mtftpd's own is about
// 20 KB; a server answering with more is not one to trust.
const MaxMetricsBytes = 16 << 20

// ErrSoakLeak is returned by JudgeSoak when goroutines or open fds did not
// come back near their first sample after the drain.
var ErrSoakLeak = errors.New("soak: leak after the drain")

// SoakSample is one /metrics snapshot reduced to what the soak tracks.
type SoakSample struct {
	RSSBytes, HeapBytes          float64
	Goroutines, FDs              float64
	TFTPActive                   float64
	TFTPCompleted, TFTPFailed    float64
	DHCPAcks, DHCPNaks, HTTP5xx  float64
	LoadOK, LoadFail, ElapsedSec int // set by the caller: the load loops' own counts
}

// SoakCSVHeader is the soak CSV's first line; SoakSample.CSV writes the
// rows under it (docs/soak-*.csv keep this shape).
const SoakCSVHeader = "elapsed_s,rss_mb,heap_mb,goroutines,fds,tftp_active,tftp_completed,tftp_failed,dhcp_ack,dhcp_nak,http_5xx,load_ok,load_fail"

// ParseSoakSample reads a /metrics text exposition (at most
// MaxMetricsBytes) and sums the samples of each tracked metric; a metric
// the server does not export (yet) counts 0.
func ParseSoakSample(r io.Reader) (SoakSample, error) {
	lr := &io.LimitedReader{R: r, N: MaxMetricsBytes + 1}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(lr)
	if lr.N <= 0 {
		return SoakSample{}, fmt.Errorf("soak: /metrics larger than %d bytes", MaxMetricsBytes)
	}
	if err != nil {
		return SoakSample{}, fmt.Errorf("soak: /metrics: %w", err)
	}
	sum := func(name string, keep func(*dto.Metric) bool) float64 {
		f := fams[name]
		if f == nil {
			return 0
		}
		var s float64
		for _, m := range f.GetMetric() {
			if keep != nil && !keep(m) {
				continue
			}
			switch {
			case m.Gauge != nil:
				s += m.Gauge.GetValue()
			case m.Counter != nil:
				s += m.Counter.GetValue()
			case m.Untyped != nil:
				s += m.Untyped.GetValue()
			}
		}
		return s
	}
	code5xx := func(m *dto.Metric) bool {
		for _, l := range m.GetLabel() {
			if l.GetName() == "code" && strings.HasPrefix(l.GetValue(), "5") {
				return true
			}
		}
		return false
	}
	return SoakSample{
		RSSBytes:   sum("process_resident_memory_bytes", nil),
		HeapBytes:  sum("go_memstats_heap_alloc_bytes", nil),
		Goroutines: sum("go_goroutines", nil),
		// The descriptors of mappings kept idle for the next transfer
		// (docs/design.md, "Mappings kept idle") are no leak.
		FDs:           sum("process_open_fds", nil) - sum("mtftpd_tftp_file_mappings_idle", nil),
		TFTPActive:    sum("mtftpd_tftp_active", nil),
		TFTPCompleted: sum("mtftpd_tftp_completed_total", nil),
		TFTPFailed:    sum("mtftpd_tftp_failed_total", nil),
		DHCPAcks:      sum("mtftpd_dhcp_ack_total", nil),
		DHCPNaks:      sum("mtftpd_dhcp_nak_total", nil),
		HTTP5xx:       sum("mtftpd_http_responses_total", code5xx),
	}, nil
}

// CSV is the sample as one row under SoakCSVHeader: MB with one decimal,
// counts as integers.
func (s SoakSample) CSV() string {
	n := func(v float64) string { return strconv.FormatFloat(math.Round(v), 'f', 0, 64) }
	mb := func(v float64) string { return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) }
	return strings.Join([]string{
		strconv.Itoa(s.ElapsedSec), mb(s.RSSBytes), mb(s.HeapBytes), n(s.Goroutines), n(s.FDs),
		n(s.TFTPActive), n(s.TFTPCompleted), n(s.TFTPFailed), n(s.DHCPAcks), n(s.DHCPNaks), n(s.HTTP5xx),
		strconv.Itoa(s.LoadOK), strconv.Itoa(s.LoadFail),
	}, ",")
}

// Leak margins after the drain, over the first (idle) sample: the metrics
// scrape's own connection and the runtime's spare workers come and go.
const (
	SoakGoroutineMargin = 10
	SoakFDMargin        = 5
)

// SoakMax is the largest value of each column of a soak CSV (at most
// MaxMetricsBytes of it), by column name.
func SoakMax(r io.Reader) (map[string]float64, error) {
	cr := csv.NewReader(io.LimitReader(r, MaxMetricsBytes))
	cr.FieldsPerRecord = len(strings.Split(SoakCSVHeader, ","))
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("soak: CSV header: %w", err)
	}
	if strings.Join(head, ",") != SoakCSVHeader {
		return nil, fmt.Errorf("soak: CSV header %q, want %q", strings.Join(head, ","), SoakCSVHeader)
	}
	maxima := make(map[string]float64, len(head))
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return maxima, nil
		}
		if err != nil {
			return nil, fmt.Errorf("soak: CSV: %w", err)
		}
		for i, f := range rec {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil {
				return nil, fmt.Errorf("soak: CSV line %d column %s: %q is not a number", line, head[i], f)
			}
			if old, ok := maxima[head[i]]; !ok || v > old {
				maxima[head[i]] = v
			}
		}
	}
}

// JudgeSoak writes what soak.sh prints about the server — RSS, goroutines
// and fds (first, max, after the drain) and the transfer counters of the
// last sample — and returns ErrSoakLeak (wrapped, with the numbers) when
// goroutines or fds after the drain exceed the first sample plus their
// margin. maxima may be nil (then the larger of first and last is shown).
func JudgeSoak(w io.Writer, first, last SoakSample, maxima map[string]float64) error {
	mx := func(col string, a, b float64) float64 {
		if v, ok := maxima[col]; ok {
			return v
		}
		return math.Max(a, b)
	}
	mb := func(v float64) string { return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) }
	fmt.Fprintf(w, "RSS MB: first %s, max %.1f, last %s\n", mb(first.RSSBytes), mx("rss_mb", first.RSSBytes/(1<<20), last.RSSBytes/(1<<20)), mb(last.RSSBytes))
	fmt.Fprintf(w, "goroutines: first %.0f, max %.0f, after drain %.0f\n", first.Goroutines, mx("goroutines", first.Goroutines, last.Goroutines), last.Goroutines)
	fmt.Fprintf(w, "open fds: first %.0f, max %.0f, after drain %.0f\n", first.FDs, mx("fds", first.FDs, last.FDs), last.FDs)
	fmt.Fprintf(w, "tftp transfers completed %.0f, failed %.0f; dhcp ACKs %.0f, NAKs %.0f; http 5xx %.0f\n",
		last.TFTPCompleted, last.TFTPFailed, last.DHCPAcks, last.DHCPNaks, last.HTTP5xx)
	var errs []error
	if last.Goroutines > first.Goroutines+SoakGoroutineMargin {
		errs = append(errs, fmt.Errorf("%w: goroutines %.0f -> %.0f (margin %d)", ErrSoakLeak, first.Goroutines, last.Goroutines, SoakGoroutineMargin))
	}
	if last.FDs > first.FDs+SoakFDMargin {
		errs = append(errs, fmt.Errorf("%w: fds %.0f -> %.0f (margin %d)", ErrSoakLeak, first.FDs, last.FDs, SoakFDMargin))
	}
	return errors.Join(errs...)
}
