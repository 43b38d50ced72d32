package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/insomniacslk/dhcp/dhcpv4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/dhcp"
	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/mirror"
	"github.com/mtftpd/mtftpd/mtftp"
	"github.com/mtftpd/mtftpd/tftp"
)

// services are real servers on loopback: TFTP and HTTP on ephemeral
// ports, DHCP answering through Handle (no socket: port 67 needs root and
// sends broadcasts), and an idle multicast server.
type services struct {
	tftp   *tftp.Server
	dhcp   *dhcp.Server
	web    *mirror.Server
	status *Server
	tftpAt string
	base   string // http://127.0.0.1:port
}

const fileSize = 20*512 + 77

func start(t testing.TB, configure ...func(*services)) *services {
	t.Helper()
	root := t.TempDir()
	b := make([]byte, fileSize)
	rand.NewChaCha8([32]byte{1}).Read(b)
	if err := os.MkdirAll(filepath.Join(root, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "images", "vmlinuz"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	sv := &services{
		tftp: &tftp.Server{Files: store, Log: log},
		dhcp: &dhcp.Server{Log: log, Subnets: []dhcp.Subnet{{
			Prefix:     netip.MustParsePrefix("127.0.0.0/8"),
			RangeStart: netip.MustParseAddr("127.0.0.1"), RangeEnd: netip.MustParseAddr("127.0.0.1"),
			LeaseTime: time.Hour,
		}}},
		web: &mirror.Server{Root: root, Log: log},
	}
	mc := &mtftp.Server{Files: store, Log: log}
	if err := mc.Init(); err != nil {
		t.Fatal(err)
	}
	sv.status = &Server{TFTP: sv.tftp, MTFTP: mc, DHCP: sv.dhcp, HTTP: sv.web}
	sv.web.Pages = sv.status.Handler()
	for _, f := range configure {
		f(sv)
	}

	ctx, cancel := context.WithCancel(context.Background())
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sv.tftpAt = pc.LocalAddr().String()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sv.base = "http://" + ln.Addr().String()
	tftpDone, webDone := make(chan error, 1), make(chan error, 1)
	go func() { tftpDone <- sv.tftp.Serve(ctx, pc) }()
	go func() { webDone <- sv.web.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-tftpDone; err != nil && !errors.Is(err, tftp.ErrServerClosed) {
			t.Errorf("tftp: %v", err)
		}
		if err := <-webDone; err != nil {
			t.Errorf("http: %v", err)
		}
		sv.dhcp.Shutdown(context.Background())
	})
	return sv
}

// lease runs DISCOVER/OFFER/REQUEST/ACK for a UEFI x64 PXE client, which
// gets 127.0.0.1: the address the TFTP client below uses.
func (sv *services) lease(t testing.TB, mac net.HardwareAddr) {
	t.Helper()
	in := dhcp.Incoming{IfIndex: 1, IfAddr: netip.MustParseAddr("127.0.0.2"), Src: netip.MustParseAddrPort("0.0.0.0:68"), Port: dhcp.PortServer}
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7})),
	}
	disc, _ := dhcpv4.New(append(pxe, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))...)
	offer, err := sv.dhcp.Handle(disc, in, time.Now())
	if err != nil || offer == nil {
		t.Fatalf("DISCOVER: %v, %v", offer, err)
	}
	req, _ := dhcpv4.New(append(pxe, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.Pkt.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(127, 0, 0, 2))))...)
	if ack, err := sv.dhcp.Handle(req, in, time.Now()); err != nil || ack == nil || ack.Pkt.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST: %v, %v", ack, err)
	}
}

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestTransfersAPI holds a transfer open and checks that /api/transfers
// shows it, joined with the client's DHCP lease, then shows it finished.
func TestTransfersAPI(t *testing.T) {
	sv := start(t)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	sv.lease(t, mac)
	c := testutil.StartSlowTFTP(t, sv.tftpAt, "images/vmlinuz")
	c.Next(t)
	c.Next(t)
	c.Next(t)

	var s Snapshot
	code, body := get(t, sv.base+"/api/transfers")
	if err := json.Unmarshal(body, &s); code != 200 || err != nil {
		t.Fatalf("/api/transfers: %d %v\n%s", code, err, body)
	}
	if len(s.Transfers) != 1 {
		t.Fatalf("%d running transfers, want 1:\n%s", len(s.Transfers), body)
	}
	tr := s.Transfers[0]
	if tr.File != "images/vmlinuz" || tr.Op != "read" || tr.Size != fileSize || tr.Bytes != 3*512 ||
		tr.BlockSize != 512 || tr.WindowSize != 1 || tr.MAC != mac.String() || tr.End != nil || tr.Outcome != "" {
		t.Errorf("running transfer %+v", tr)
	}
	if len(s.Clients) != 1 {
		t.Fatalf("clients %+v, want one", s.Clients)
	}
	cl := s.Clients[0]
	if cl.IP != "127.0.0.1" || cl.MAC != mac.String() || cl.Arch != "7 (UEFI x64)" || cl.LeaseExpiry == nil ||
		len(cl.Transfers) != 1 || cl.Transfers[0] != tr.ID {
		t.Errorf("client %+v", cl)
	}

	c.Finish(t)
	for i := 0; i < 200; i++ {
		if running, _ := sv.tftp.Transfers(); len(running) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(snapshotTTL) // the cached body expires
	_, body = get(t, sv.base+"/api/transfers")
	s = Snapshot{}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Transfers) != 0 || len(s.Recent) != 1 || s.Recent[0].Outcome != "ok" || s.Recent[0].Bytes != fileSize || s.Recent[0].End == nil {
		t.Errorf("after the transfer:\n%s", body)
	}
	// ?recent=N limits the finished ones; a bad N is a clear 400.
	_, body = get(t, sv.base+"/api/transfers?recent=0")
	s = Snapshot{}
	if err := json.Unmarshal(body, &s); err != nil || len(s.Recent) != 0 {
		t.Errorf("recent=0: %v\n%s", err, body)
	}
	if code, body := get(t, sv.base+"/api/transfers?recent=x"); code != 400 || !strings.Contains(string(body), "from 0 to 256") {
		t.Errorf("recent=x: %d %s", code, body)
	}
}

// TestMetrics parses /metrics with the Prometheus text parser after a
// real transfer, a DHCP lease and HTTP requests, and checks the counters
// the issue names are there and non-zero.
func TestMetrics(t *testing.T) {
	sv := start(t)
	sv.lease(t, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2})
	testutil.StartSlowTFTP(t, sv.tftpAt, "images/vmlinuz").Finish(t)
	if code, _ := get(t, sv.base+"/images/vmlinuz"); code != 200 {
		t.Fatalf("mirror GET: %d", code)
	}
	// "/status" redirects to the page, "/" too; both end at index.html.
	for _, p := range []string{"/status", "/"} {
		if code, body := get(t, sv.base+p); code != 200 || !strings.Contains(string(body), `<script src="app.js">`) {
			t.Fatalf("GET %s: %d, not the status page", p, code)
		}
	}
	for i := 0; i < 200 && sv.tftp.Counters.Completed.Load() == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}

	code, body := get(t, sv.base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.Counter.GetValue(), true
			case dto.MetricType_GAUGE:
				return m.Gauge.GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
		return 0, false
	}
	for _, c := range []struct {
		name    string
		labels  map[string]string
		nonZero bool
	}{
		{"mtftpd_tftp_rrq_total", nil, true},
		{"mtftpd_tftp_completed_total", nil, true},
		{"mtftpd_tftp_bytes_sent_total", nil, true},
		{"mtftpd_tftp_data_sent_total", nil, true},
		{"mtftpd_tftp_retransmits_total", nil, false},
		{"mtftpd_tftp_bad_packet_total", nil, false},
		{"mtftpd_tftp_active", nil, false}, // transfers in flight: a gauge
		{"mtftpd_tftp_transfer_rto_seconds", nil, true},
		{"mtftpd_tftp_listener_drops_total", nil, false},
		{"mtftpd_udpio_batch_size", nil, true},
		{"mtftpd_udpio_gso_max_segments", nil, true},
		{"mtftpd_udpio_gso", nil, false},
		{"mtftpd_mtftp_running_sessions", map[string]string{"dialect": "rfc2090"}, false},
		{"mtftpd_mtftp_session_receivers", map[string]string{"dialect": "pxe"}, false},
		{"mtftpd_mtftp_repairs_total", nil, false},
		{"mtftpd_dhcp_discover_total", nil, true},
		{"mtftpd_dhcp_offer_total", nil, true},
		{"mtftpd_dhcp_ack_total", nil, true},
		{"mtftpd_dhcp_nak_total", nil, false},
		{"mtftpd_dhcp_replies_by_arch_total", map[string]string{"reply": "offer", "arch": "uefi64"}, true},
		{"mtftpd_dhcp_replies_by_arch_total", map[string]string{"reply": "ack", "arch": "uefi64"}, true},
		{"mtftpd_http_requests_total", nil, true},
		{"mtftpd_http_bytes_sent_total", nil, true},
		{"mtftpd_http_responses_total", map[string]string{"code": "200"}, true},
	} {
		v, ok := value(c.name, c.labels)
		if !ok {
			t.Errorf("%s%v missing from /metrics", c.name, c.labels)
		} else if c.nonZero && v <= 0 {
			t.Errorf("%s%v = %v, want > 0", c.name, c.labels, v)
		}
	}
	if os.Getenv("DUMP_METRICS") != "" {
		t.Logf("%s", body)
	}
	if fams["mtftpd_tftp_active"].GetType() != dto.MetricType_GAUGE || fams["mtftpd_tftp_rrq_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("types: active %v, rrq %v; want gauge and counter", fams["mtftpd_tftp_active"].GetType(), fams["mtftpd_tftp_rrq_total"].GetType())
	}
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"RRQ": "rrq", "BytesSent": "bytes_sent", "UnknownTID": "unknown_tid", "ArchUEFI64": "arch_uefi64",
		"PXEIgnored": "pxe_ignored", "ActivePasses": "active_passes", "ArchUEFIARM32": "arch_uefiarm32",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteText renders a snapshot with a client fetching a file, one in a
// multicast session, and a finished transfer.
func TestWriteText(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exp, end := now.Add(30*time.Minute), now.Add(-5*time.Second)
	s := Snapshot{
		Time: now,
		Clients: []Client{
			{IP: "192.0.2.100", MAC: "52:54:00:00:00:01", Arch: "7 (UEFI x64)", LeaseExpiry: &exp, Transfers: []uint64{4}},
			{IP: "192.0.2.101", Sessions: []string{"239.255.0.1:1758"}},
		},
		Transfers: []Transfer{{ID: 4, Client: "192.0.2.100:2000", File: "images/vmlinuz", Size: 1000, Bytes: 500, Rate: 1e6, Retransmits: 3}},
		Sessions: []Session{{Dialect: "rfc2090", File: "initrd.img", Group: "239.255.0.1:1758", Position: 25, Blocks: 100, Repairs: 2,
			Receivers: []Receiver{{Addr: "192.0.2.101:3000", Master: true}}}},
		Recent: []Transfer{{Client: "192.0.2.100:1999", File: "pxelinux.0", Bytes: 42, End: &end, Outcome: "ok"}},
	}
	var b strings.Builder
	if err := s.WriteText(&b, 10); err != nil {
		t.Fatal(err)
	}
	out := strings.Join(strings.Fields(b.String()), " ") // columns: any spacing
	for _, want := range []string{
		"2 clients, 1 transfers running (8.0 Mbit/s), 1 multicast sessions",
		"192.0.2.100 52:54:00:00:00:01 7 (UEFI x64) ends in 30 min images/vmlinuz [#####.....] 50% 8.0 Mbit/s 3 192.0.2.101",
		"192.0.2.101 - - - multicast 239.255.0.1:1758",
		"initrd.img rfc2090 239.255.0.1:1758 [##........] 25% 2 192.0.2.101:3000*",
		"5 s ago 192.0.2.100:1999 pxelinux.0 42 0.0 Mbit/s 0 ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// BenchmarkSnapshotJSON is the server's cost of one /api/transfers body
// with 200 transfers running: a status page costs at most one of these
// per snapshotTTL however many pages are open.
func BenchmarkSnapshotJSON(b *testing.B) {
	sv := start(b, func(sv *services) { sv.tftp.MaxPerClient = 1000 })
	cs := make([]*testutil.SlowTFTP, 200)
	for i := range cs {
		cs[i] = testutil.StartSlowTFTP(b, sv.tftpAt, "images/vmlinuz")
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		body, err := json.Marshal(sv.status.Snapshot(time.Now(), DefaultRecent))
		if err != nil {
			b.Fatal(err)
		}
		n = len(body)
	}
	b.ReportMetric(float64(n), "bytes/body")
	b.StopTimer()
	for _, c := range cs {
		c.Finish(b)
	}
}

// BenchmarkPageLoad is what open status pages and a Prometheus scraper
// cost the server per request, over real HTTP with 200 transfers
// running: "api" is a page's poll (the cached body: at most one
// Snapshot per snapshotTTL is built, see BenchmarkSnapshotJSON),
// "metrics" a scrape.
func BenchmarkPageLoad(b *testing.B) {
	sv := start(b, func(sv *services) { sv.tftp.MaxPerClient = 1000 })
	cs := make([]*testutil.SlowTFTP, 200)
	for i := range cs {
		cs[i] = testutil.StartSlowTFTP(b, sv.tftpAt, "images/vmlinuz")
	}
	for _, path := range []string{"/api/transfers", "/metrics"} {
		b.Run(strings.Trim(strings.Split(path, "/")[1], "/"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if code, _ := get(b, sv.base+path); code != 200 {
					b.Fatalf("%s: %d", path, code)
				}
			}
		})
	}
	for _, c := range cs {
		c.Finish(b)
	}
}

// TestWriteTextEscapes is the attack of issue 13 finding 17: a file name
// (an upload, a request) and DHCP data carrying terminal escape
// sequences (OSC retitle, clear screen, an 8-bit CSI, a bidi override,
// bytes that are not UTF-8) must reach the admin's terminal as visible
// escapes, never as control bytes.
func TestWriteTextEscapes(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	evil := "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\xff\tx\r"
	end := now.Add(-time.Second)
	s := Snapshot{
		Time:      now,
		Clients:   []Client{{IP: "192.0.2.7", MAC: evil, Arch: evil, Transfers: []uint64{1}, Sessions: []string{evil}}},
		Transfers: []Transfer{{ID: 1, Client: "192.0.2.7:1000", File: "up/" + evil, Size: -1}},
		Sessions:  []Session{{Dialect: evil, File: evil, Group: evil, Receivers: []Receiver{{Addr: evil}}}},
		Recent:    []Transfer{{Client: evil, File: evil, Outcome: evil, End: &end}},
	}
	var b strings.Builder
	if err := s.WriteText(&b, 10); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for i, r := range out {
		if (r < 0x20 && r != '\n') || (r >= 0x7f && r < 0xa0) || r == 0x202e || r == utf8.RuneError {
			t.Fatalf("byte %d of the output is %U: %q", i, r, out)
		}
	}
	if !strings.Contains(out, `up/\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\xff\x09x\x0d`) {
		t.Fatalf("the file name is not shown escaped:\n%s", out)
	}
	if got := Printable("pxelinux.cfg/01-52-54-00-12-34-56 ünïcode"); got != "pxelinux.cfg/01-52-54-00-12-34-56 ünïcode" {
		t.Fatalf("a plain name changed: %q", got)
	}
}
