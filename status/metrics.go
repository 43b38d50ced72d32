package status

import (
	"strconv"
	"strings"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mtftpd/mtftpd/internal/counters"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// collector reads every counter at scrape time: the services count with
// plain atomics on their hot paths, and nothing is counted twice. It is
// an unchecked collector (Describe sends nothing) because the metric set
// follows the Counters structs' fields.
type collector struct{ s *Server }

func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	emitCounters(ch, "tftp", s.TFTP.Counters.Snapshot())
	rto := s.TFTP.RTOs()
	buckets := make(map[float64]uint64, len(rto.Cumulative))
	for i, b := range counters.DurationBounds {
		buckets[b.Seconds()] = rto.Cumulative[i]
	}
	ch <- prometheus.MustNewConstHistogram(
		prometheus.NewDesc("mtftpd_tftp_transfer_rto_seconds", "Retransmission timeout each finished TFTP transfer ended with.", nil, nil),
		rto.Count, rto.Sum.Seconds(), buckets)

	if fs := s.TFTP.Files; fs != nil {
		st := fs.Stats()
		ch <- prometheus.MustNewConstMetric(
			prometheus.NewDesc("mtftpd_tftp_file_mappings", "Files mapped for TFTP (one per file version), idle ones included; each holds a descriptor.", nil, nil),
			prometheus.GaugeValue, float64(st.Live))
		ch <- prometheus.MustNewConstMetric(
			prometheus.NewDesc("mtftpd_tftp_file_mappings_idle", "Of those, mappings no transfer uses, kept for the next one (docs/design.md, \"Mappings kept idle\").", nil, nil),
			prometheus.GaugeValue, float64(st.Idle))
	}
	caps, drops := s.TFTP.Listener()
	ch <- prometheus.MustNewConstMetric(
		prometheus.NewDesc("mtftpd_tftp_listener_drops_total", "Requests the kernel dropped on the TFTP listening socket, its queue full (SO_RXQ_OVFL).", nil, nil),
		prometheus.CounterValue, float64(drops))
	emitCaps(ch, caps)

	if s.MTFTP != nil {
		emitCounters(ch, "mtftp", s.MTFTP.Counters.Snapshot())
		// Every built-in dialect always present, 0 when idle.
		sessions, receivers := map[string]int{"rfc2090": 0, "pxe": 0, "native": 0}, map[string]int{}
		for _, x := range s.MTFTP.Sessions() {
			sessions[x.Dialect]++
			receivers[x.Dialect] += len(x.Receivers)
		}
		sd := prometheus.NewDesc("mtftpd_mtftp_running_sessions", "Multicast sessions (PXE MTFTP: passes) running, by dialect.", []string{"dialect"}, nil)
		rd := prometheus.NewDesc("mtftpd_mtftp_session_receivers", "Clients in running multicast sessions, by dialect.", []string{"dialect"}, nil)
		for d, n := range sessions {
			ch <- prometheus.MustNewConstMetric(sd, prometheus.GaugeValue, float64(n), d)
			ch <- prometheus.MustNewConstMetric(rd, prometheus.GaugeValue, float64(receivers[d]), d)
		}
	}
	if s.DHCP != nil {
		emitCounters(ch, "dhcp", s.DHCP.Counters.Snapshot())
		d := prometheus.NewDesc("mtftpd_dhcp_replies_by_arch_total", "DHCP replies sent, by kind and client class.", []string{"reply", "arch"}, nil)
		for _, a := range s.DHCP.Counters.ByArch() {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(a.Value), a.Reply, a.Arch)
		}
	}
	if s.DHCP6 != nil {
		emitCounters(ch, "dhcp6", s.DHCP6.Counters.Snapshot())
	}
	if s.HTTP != nil {
		emitCounters(ch, "http", counters.Snapshot(&s.HTTP.Counters))
		d := prometheus.NewDesc("mtftpd_http_responses_total", "HTTP responses, by status code.", []string{"code"}, nil)
		for code, n := range s.HTTP.Responses() {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), strconv.Itoa(code))
		}
	}
}

// emitCounters exports one service's counters: mtftpd_<service>_<field>,
// with _total for counters (BytesSent → mtftpd_tftp_bytes_sent_total) and
// without for levels (Active → mtftpd_tftp_active).
func emitCounters(ch chan<- prometheus.Metric, service string, vals []counters.Value) {
	for _, v := range vals {
		name := "mtftpd_" + service + "_" + snake(v.Name)
		kind := prometheus.CounterValue
		if v.Gauge {
			kind = prometheus.GaugeValue
		} else {
			name += "_total"
		}
		help := service + " counter " + v.Name + " (see the Counters type of package " + service + ")"
		switch service {
		case "http":
			help = "HTTP mirror counter " + v.Name + " (see mirror.Counters)"
		case "dhcp6":
			help = "DHCPv6 counter " + v.Name + " (see dhcp.Counters6)"
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, nil, nil), kind, float64(v.Value))
	}
}

func emitCaps(ch chan<- prometheus.Metric, caps udpio.Caps) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, m := range []struct {
		name, help string
		v          float64
	}{
		{"mtftpd_udpio_gso", "1 if UDP GSO (UDP_SEGMENT) is in use on the TFTP listener's host.", b(caps.GSO)},
		{"mtftpd_udpio_sendmmsg", "1 if windows leave by sendmmsg.", b(caps.MMsg)},
		{"mtftpd_udpio_gso_max_segments", "Datagrams in one GSO super-datagram at most (UDP_MAX_SEGMENTS).", float64(caps.GSOMaxSegments)},
		{"mtftpd_udpio_batch_size", "Datagrams one send syscall carries at most.", float64(udpio.BatchSize)},
	} {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(m.name, m.help, nil, nil), prometheus.GaugeValue, m.v)
	}
}

// snake turns a Go field name into a metric name part: BytesSent →
// bytes_sent, RRQ → rrq, UnknownTID → unknown_tid, ArchUEFI64 → arch_uefi64.
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			prevLower := unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (nextLower && unicode.IsUpper(r[i-1])) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}
