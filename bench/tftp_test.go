package bench

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

// loopServer is an in-process mtftpd TFTP server on 127.0.0.1.
type loopServer struct {
	*tftp.Server
	addr string
	logs *testutil.SyncBuffer
}

// startLoopServer serves root on 127.0.0.1 and an ephemeral port until the
// test ends.
func startLoopServer(t *testing.T, root string, opts ...func(*tftp.Server)) *loopServer {
	t.Helper()
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	srv := &tftp.Server{Files: store, Log: zerolog.New(logs)}
	for _, o := range opts {
		o(srv)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		cancel()
		if err := <-done; err != nil && !errors.Is(err, tftp.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		store.Close()
	})
	return &loopServer{Server: srv, addr: pc.LocalAddr().String(), logs: logs}
}

// writeFile writes size random bytes to root/name and returns their sha256.
func writeFile(t *testing.T, root, name string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(size)})
	r.Read(b)
	if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// TestTFTPSwarmProfiles: every profile downloads a verified file from a
// real server; the report counts each download once, with the options the
// server granted, and the UEFI profile's probes reach the server as
// probes.
func TestTFTPSwarmProfiles(t *testing.T) {
	root := t.TempDir()
	const size = 300_001 // not a multiple of any block size
	sum := writeFile(t, root, "f", size)
	srv := startLoopServer(t, root)
	want := map[string]string{"bios": "1468/1", "uefi": "1468/4", "ipxe": "1432/1", "linux": "65464/64"}
	const clients = 5
	for _, name := range []string{"bios", "uefi", "ipxe", "linux"} {
		t.Run(name, func(t *testing.T) {
			probes := srv.Counters.Probes.Load()
			live := &TFTPLive{}
			s := &TFTPSwarm{Target: srv.addr, File: "f", Clients: clients, Profile: Profiles[name],
				SHA256: sum, Size: size, Live: live}
			rep, err := s.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Completed != clients || rep.Failed != 0 || rep.Transfers != clients || rep.SuccessRatio != 1 {
				t.Fatalf("report %+v", rep)
			}
			if rep.Bytes != clients*size || rep.FileSize != size || rep.AggregateMBps <= 0 {
				t.Fatalf("bytes %d, file size %d, aggregate %.1f MB/s", rep.Bytes, rep.FileSize, rep.AggregateMBps)
			}
			if rep.Negotiated[want[name]] != clients {
				t.Fatalf("negotiated %v, want %d × %s", rep.Negotiated, clients, want[name])
			}
			if rep.TransferMs.P50 <= 0 || rep.TransferMs.P99 < rep.TransferMs.P50 || rep.TransferMBps.P50 <= 0 {
				t.Fatalf("distributions: %+v %+v", rep.TransferMs, rep.TransferMBps)
			}
			if live.Bytes.Load() != rep.Bytes || live.Completed.Load() != clients || live.Active.Load() != 0 {
				t.Fatalf("live: %d bytes, %d completed, %d active", live.Bytes.Load(), live.Completed.Load(), live.Active.Load())
			}
			wantProbes := uint64(0)
			if name == "uefi" {
				wantProbes = clients
			}
			for deadline := time.Now().Add(5 * time.Second); srv.Counters.Probes.Load()-probes != wantProbes && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if got := srv.Counters.Probes.Load() - probes; got != wantProbes {
				t.Fatalf("server counted %d probes, want %d", got, wantProbes)
			}
		})
	}
}

// TestTFTPSwarmFailures: the report names each cause.
func TestTFTPSwarmFailures(t *testing.T) {
	root := t.TempDir()
	sum := writeFile(t, root, "f", 10_000)
	srv := startLoopServer(t, root)
	wrong := sha256.Sum256([]byte("not the file"))

	// A UDP socket that reads and never answers.
	mute, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := mute.ReadFrom(buf); err != nil {
				return
			}
		}
	}()

	for _, c := range []struct {
		name string
		s    TFTPSwarm
		kind string
	}{
		{"wrong sha256", TFTPSwarm{File: "f", SHA256: wrong[:]}, ErrKindVerify},
		{"wrong size", TFTPSwarm{File: "f", SHA256: sum, Size: 9_999}, ErrKindSize},
		{"not found", TFTPSwarm{File: "missing"}, "remote_1"},
		{"jail", TFTPSwarm{File: "../etc/passwd"}, "remote_2"},
		{"no answer", TFTPSwarm{Target: mute.LocalAddr().String(), File: "f", Timeout: 20 * time.Millisecond, Retries: 2}, ErrKindTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			if s.Target == "" {
				s.Target = srv.addr
			}
			s.Clients, s.Profile = 3, Profiles["ipxe"]
			rep, err := s.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Failed != 3 || rep.Completed != 0 || rep.Errors[c.kind] != 3 || len(rep.Errors) != 1 || rep.SuccessRatio != 0 {
				t.Fatalf("failed %d, completed %d, errors %v, want 3 × %s", rep.Failed, rep.Completed, rep.Errors, c.kind)
			}
			if len(rep.ErrorSamples) == 0 {
				t.Fatal("no error samples")
			}
		})
	}
}

// TestTFTPSwarmDuration: with Duration, clients download again and again;
// what the end of Duration cuts is cancelled, not failed; the run stops by
// itself.
func TestTFTPSwarmDuration(t *testing.T) {
	root := t.TempDir()
	sum := writeFile(t, root, "f", 2_000)
	srv := startLoopServer(t, root)
	const d = 500 * time.Millisecond
	s := &TFTPSwarm{Target: srv.addr, File: "f", Clients: 3, Profile: Profiles["bios"], SHA256: sum, Duration: d}
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Completed+rep.Cancelled != rep.Transfers || rep.Transfers <= 3 {
		t.Fatalf("transfers %d = completed %d + failed %d + cancelled %d; want repeats and no failure (%v)",
			rep.Transfers, rep.Completed, rep.Failed, rep.Cancelled, rep.Errors)
	}
	if rep.WallSeconds < d.Seconds() || rep.Stopped != "" || rep.Duration != d.Seconds() {
		t.Fatalf("wall %.3f s, stopped %q, duration %.3f", rep.WallSeconds, rep.Stopped, rep.Duration)
	}
}

// TestTFTPSwarmSourceAddrs: clients bind to the source addresses round
// robin (the server sees both).
func TestTFTPSwarmSourceAddrs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("binding 127.0.0.2 needs Linux's 127.0.0.0/8 loopback")
	}
	root := t.TempDir()
	sum := writeFile(t, root, "f", 5_000)
	srv := startLoopServer(t, root)
	addrs, err := ParseSourceAddrs("127.0.0.2-127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	s := &TFTPSwarm{Target: srv.addr, File: "f", Clients: 4, Profile: Profiles["uefi"], SHA256: sum, SourceAddrs: addrs}
	rep, err := s.Run(context.Background())
	if err != nil || rep.Completed != 4 || rep.SourceAddrs != 2 {
		t.Fatalf("%v: %+v", err, rep)
	}
	for _, a := range []string{"127.0.0.2", "127.0.0.3"} {
		for deadline := time.Now().Add(5 * time.Second); strings.Count(srv.logs.String(), `"client":"`+a+`:`) < 4; {
			if time.Now().After(deadline) {
				t.Fatalf("server did not log 4 requests (2 probes, 2 downloads) from %s:\n%s", a, srv.logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestTFTPSwarmLoopbackSpread (issue 16, "Load tester usability"): a
// swarm aimed at a loopback server spreads its clients over 127.0.0.0/8
// by itself, so a server's limit per client address does not fail it;
// from one address given by hand the same swarm meets that limit, and the
// report says which limit and names --source-addrs.
func TestTFTPSwarmLoopbackSpread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("binding 127.77.0.x needs Linux's 127.0.0.0/8 loopback")
	}
	root := t.TempDir()
	sum := writeFile(t, root, "f", 300_000)
	srv := startLoopServer(t, root, func(s *tftp.Server) { s.MaxPerClient = 2 })
	// Slow clients (lock-step 512-byte blocks of a 300 KB file) so that
	// the 8 overlap at the server.
	s := &TFTPSwarm{Target: srv.addr, File: "f", Clients: 8, Profile: Profiles["bios"], SHA256: sum}
	rep, err := s.Run(context.Background())
	if err != nil || rep.Completed != 8 || rep.SourceAddrs != 8 || !strings.Contains(rep.SourceSpread, "127.77.0.1-127.77.0.8") || len(rep.LimitHints()) != 0 {
		t.Fatalf("spread swarm: %v: completed %d, %d source addresses, spread %q, hints %q", err, rep.Completed, rep.SourceAddrs, rep.SourceSpread, rep.LimitHints())
	}
	one := netip.MustParseAddr("127.0.0.1")
	var busy int
	for try := 0; try < 5 && busy == 0; try++ { // bounded: the clients must overlap once
		s := &TFTPSwarm{Target: srv.addr, File: "f", Clients: 8, Profile: Profiles["bios"], SHA256: sum, SourceAddrs: []netip.Addr{one}}
		rep, err = s.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		busy = rep.Errors[ErrKindBusyAddress]
	}
	hints := rep.LimitHints()
	if busy == 0 || rep.SourceSpread != "" || len(hints) != 1 || !strings.Contains(hints[0], "tftp.max_per_client") || !strings.Contains(hints[0], "--source-addrs") {
		t.Fatalf("one address: errors %v, spread %q, hints %q; want busy_address failures explained", rep.Errors, rep.SourceSpread, hints)
	}
	if LoopbackSpread("192.0.2.1", 8) != nil || LoopbackSpread("127.0.0.1", 1) != nil || len(LoopbackSpread("localhost", 5000)) != MaxTFTPClients {
		t.Fatal("LoopbackSpread: only for a loopback host and more than one client, at most MaxTFTPClients")
	}
}

func TestTFTPSwarmConfig(t *testing.T) {
	ok := TFTPSwarm{Target: "127.0.0.1:69", File: "f", Clients: 1, Profile: Profiles["bios"]}
	for _, c := range []struct {
		name   string
		change func(*TFTPSwarm)
		want   string
	}{
		{"no target", func(s *TFTPSwarm) { s.Target = "" }, "Target: required"},
		{"no port", func(s *TFTPSwarm) { s.Target = "127.0.0.1" }, "not host:port"},
		{"no file", func(s *TFTPSwarm) { s.File = "" }, "File: required"},
		{"no clients", func(s *TFTPSwarm) { s.Clients = 0 }, "Clients: 0"},
		{"too many clients", func(s *TFTPSwarm) { s.Clients = MaxTFTPClients + 1 }, "Clients: 4097"},
		{"no profile", func(s *TFTPSwarm) { s.Profile = Profile{} }, "Profile: required"},
		{"short digest", func(s *TFTPSwarm) { s.SHA256 = []byte{1} }, "SHA256: 1 bytes"},
		{"negative ramp", func(s *TFTPSwarm) { s.Ramp = -1 }, "Ramp: -1ns is negative"},
		{"too many transfers", func(s *TFTPSwarm) { s.Transfers = MaxTransfersPerClient + 1 }, "Transfers: 100001"},
	} {
		s := ok
		c.change(&s)
		_, err := s.config()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	c, err := ok.config()
	if err != nil || c.Transfers != 1 || c.MaxTime != DefaultTFTPMaxTime {
		t.Fatalf("defaults: %v, %d transfers, max time %v", err, c.Transfers, c.MaxTime)
	}
	ok.Duration, ok.Ramp = time.Minute, 10*time.Second
	if c, err = ok.config(); err != nil || c.Transfers != MaxTransfersPerClient || c.MaxTime != 2*time.Minute+10*time.Second {
		t.Fatalf("with duration: %v, %d transfers, max time %v", err, c.Transfers, c.MaxTime)
	}
}

func TestParseSourceAddrs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  string
	}{
		{"192.0.2.5", []string{"192.0.2.5"}, ""},
		{"192.0.2.5, 192.0.2.7-192.0.2.9", []string{"192.0.2.5", "192.0.2.7", "192.0.2.8", "192.0.2.9"}, ""},
		{"198.51.100.0/30", []string{"198.51.100.1", "198.51.100.2"}, ""},
		{"198.51.100.4/31", []string{"198.51.100.4", "198.51.100.5"}, ""},
		{"198.51.100.9/32", []string{"198.51.100.9"}, ""},
		{"", nil, "empty"},
		{"192.0.2.9-192.0.2.8", nil, "A ≤ B"},
		{"2001:db8::1", nil, "not an IPv4 address"},
		{"nope", nil, "not an IPv4 address"},
		{"192.0.2.0/33", nil, "not an IPv4 prefix"},
		{"10.0.0.0/8", nil, "more than 4096"},
	} {
		got, err := ParseSourceAddrs(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want error %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(addrs(c.want...)) {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestParseSHA256(t *testing.T) {
	sum := sha256.Sum256(nil)
	hexs := fmt.Sprintf("%x", sum)
	for _, in := range []string{"sha256:" + hexs, hexs} {
		if got, err := ParseSHA256(in); err != nil || string(got) != string(sum[:]) {
			t.Errorf("%q: %x %v", in, got, err)
		}
	}
	for _, in := range []string{"", "sha256:", "sha256:zz", "md5:" + hexs, "sha256:" + hexs[:62]} {
		if _, err := ParseSHA256(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestErrorKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&tftp.RemoteError{Code: tftp.ErrCodeNotFound, Message: "x"}, "remote_1"},
		{fmt.Errorf("wrapped: %w", &tftp.RemoteError{Code: 0}), "remote_0"},
		{fmt.Errorf("tftp: f: %w from x", tftp.ErrNoAnswer), ErrKindTimeout},
		{&verifyError{ErrKindVerify, "sha256"}, ErrKindVerify},
		{&net.OpError{Op: "listen", Err: errors.New("cannot assign requested address")}, ErrKindSocket},
		{errors.New(`server answered blksize "9000" to 1468`), ErrKindProtocol},
	} {
		if got := ErrorKind(c.err); got != c.want {
			t.Errorf("%v: %s, want %s", c.err, got, c.want)
		}
	}
}

func TestRatesOf(t *testing.T) {
	if r := ratesOf(nil); r != (Rates{}) {
		t.Fatalf("empty: %+v", r)
	}
	var v []float64
	for i := 100; i >= 1; i-- {
		v = append(v, float64(i))
	}
	if r := ratesOf(v); r.P5 != 5 || r.P50 != 50 || r.Mean != 50.5 {
		t.Fatalf("1..100: %+v", r)
	}
}

// TestCompare: reports written by a swarm and by a DHCP storm compare with
// their own kind only; ratios are B/A and say which side is better.
func TestCompare(t *testing.T) {
	a := TFTPReport{Schema: TFTPReportSchema, AggregateMBps: 100, TransferMs: Latency{P50: 10, P95: 20, P99: 40}, SuccessRatio: 1, Completed: 50}
	b := a
	b.AggregateMBps, b.TransferMs.P99 = 250, 20
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	kind, figs, err := Compare(ja, jb)
	if err != nil || kind != "tftp" {
		t.Fatalf("%s %v", kind, err)
	}
	byName := map[string]Figure{}
	for _, f := range figs {
		byName[f.Name] = f
	}
	if r, ok := byName["aggregate MB/s"].Ratio(); !ok || r != 2.5 || byName["aggregate MB/s"].Better() != "b" {
		t.Fatalf("aggregate: %v %v %s", r, ok, byName["aggregate MB/s"].Better())
	}
	if r, _ := byName["transfer p99 ms"].Ratio(); r != 0.5 || byName["transfer p99 ms"].Better() != "b" {
		t.Fatalf("p99: %v %s", r, byName["transfer p99 ms"].Better())
	}
	if _, ok := byName["failed"].Ratio(); ok || byName["failed"].Better() != "=" {
		t.Fatal("failed: 0/0 has no ratio and no winner")
	}
	jd, _ := json.Marshal(DHCPReport{ExchangesPerSec: 1000})
	jd2, _ := json.Marshal(DHCPReport{ExchangesPerSec: 3000})
	if kind, figs, err := Compare(jd, jd2); err != nil || kind != "dhcp" || figs[0].B/figs[0].A != 3 {
		t.Fatalf("dhcp: %s %v %v", kind, figs, err)
	}
	for _, c := range []struct {
		a, b []byte
		want string
	}{
		{ja, jd, "cannot compare a tftp report with a dhcp report"},
		{[]byte("[]"), jb, "not a JSON object"},
		{[]byte(`{"schema":"other/9"}`), jb, "unknown schema"},
		{[]byte(`{}`), jb, "neither"},
	} {
		if _, _, err := Compare(c.a, c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s vs %s: %v, want %q", c.a, c.b, err, c.want)
		}
	}
}

// TestTFTPSwarmRampAndMaxTime: Ramp spreads the starts (client i at
// i×Ramp/Clients) and MaxTime stops the swarm by itself: with a 10 s ramp
// and a 300 ms cap only the first of 4 clients ever starts.
func TestTFTPSwarmRampAndMaxTime(t *testing.T) {
	root := t.TempDir()
	sum := writeFile(t, root, "f", 1_000)
	srv := startLoopServer(t, root)
	s := &TFTPSwarm{Target: srv.addr, File: "f", Clients: 4, Profile: Profiles["ipxe"], SHA256: sum,
		Ramp: 10 * time.Second, MaxTime: 300 * time.Millisecond}
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Transfers != 1 || rep.Completed != 1 || !strings.HasPrefix(rep.Stopped, "max time") || rep.RampSeconds != 10 {
		t.Fatalf("transfers %d, completed %d, stopped %q, ramp %v", rep.Transfers, rep.Completed, rep.Stopped, rep.RampSeconds)
	}
}
