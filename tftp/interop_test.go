package tftp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/tftp"
)

// testServer is a real server on 127.0.0.1 and an ephemeral port.
type testServer struct {
	*tftp.Server
	Addr string
	Port int
	Root string
}

func writeRandom(t testing.TB, path string, size int, seed uint64) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func startServer(t testing.TB, root string, configure func(*tftp.Server)) *testServer {
	t.Helper()
	return startServerAt(t, netip.MustParseAddrPort("127.0.0.1:0"), root, configure)
}

// startServerAt is startServer on listen ([::1]:0, [::]:0 dual-stack:
// udpio.Network, as cmd/mtftpd opens tftp.listen).
func startServerAt(t testing.TB, listen netip.AddrPort, root string, configure func(*tftp.Server)) *testServer {
	t.Helper()
	before := runtime.NumGoroutine()
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	srv := &tftp.Server{Files: store, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	if configure != nil {
		configure(srv)
	}
	pc, err := net.ListenUDP(udpio.Network("udp", listen.Addr()), net.UDPAddrFromAddrPort(listen))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc) }()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		cancel()
		if err := <-done; err != nil && !errors.Is(err, tftp.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		store.Close()
		// Goroutine leak check: everything the server started is gone.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
	return &testServer{Server: srv, Addr: netip.AddrPortFrom(listen.Addr(), uint16(port)).String(), Port: port, Root: root}
}

// bothModes runs an interop test against the server in its default mode
// (a port and goroutine per transfer) and in single-port mode (every
// transfer from the listening port, tftp/loop.go).
func bothModes(t *testing.T, test func(t *testing.T, single bool)) {
	t.Run("per-transfer-port", func(t *testing.T) { test(t, false) })
	t.Run("single-port", func(t *testing.T) { test(t, true) })
}

// singlePort configures a test server's mode.
func singlePort(single bool) func(*tftp.Server) {
	return func(s *tftp.Server) { s.SinglePort = single }
}

func need(t *testing.T, bin string) string {
	t.Helper()
	return testutil.Tool(t, bin)
}

func run(t *testing.T, dir string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("%s: %d bytes, sha256 differs from the served %d bytes", path, len(got), len(want))
	}
}

// TestInteropClients downloads the same file with every real client we can
// install, at the option sets firmware and admins use, and compares bytes.
func TestInteropClients(t *testing.T) { bothModes(t, testInteropClients) }

func testInteropClients(t *testing.T, single bool) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "images", "initrd.img"), 3<<20+777, 1)
	srv := startServer(t, root, singlePort(single))
	port := strconv.Itoa(srv.Port)
	cases := []struct {
		name string
		bin  string
		args func(out string) []string
	}{
		{"curl-512", "curl", func(out string) []string {
			return []string{"-sS", "--tftp-blksize", "512", "-o", out, "tftp://" + srv.Addr + "/images/initrd.img"}
		}},
		{"curl-1468", "curl", func(out string) []string {
			return []string{"-sS", "--tftp-blksize", "1468", "-o", out, "tftp://" + srv.Addr + "/images/initrd.img"}
		}},
		{"atftp-1468-w16", "atftp", func(out string) []string {
			return []string{"--option", "blksize 1468", "--option", "windowsize 16", "-g", "-r", "images/initrd.img", "-l", out, "127.0.0.1", port}
		}},
		{"atftp-1468-w64", "atftp", func(out string) []string {
			return []string{"--option", "blksize 1468", "--option", "windowsize 64", "-g", "-r", "images/initrd.img", "-l", out, "127.0.0.1", port}
		}},
		{"atftp-65464", "atftp", func(out string) []string {
			return []string{"--option", "blksize 65464", "-g", "-r", "images/initrd.img", "-l", out, "127.0.0.1", port}
		}},
		{"tftp-hpa", "tftp", func(out string) []string {
			return []string{"-m", "binary", "127.0.0.1", port, "-c", "get", "images/initrd.img", out}
		}},
		{"busybox-1468", "busybox", func(out string) []string {
			return []string{"tftp", "-g", "-r", "images/initrd.img", "-l", out, "-b", "1468", "127.0.0.1", port}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := need(t, c.bin)
			out := filepath.Join(t.TempDir(), "out")
			if o, err := run(t, "", bin, c.args(out)...); err != nil {
				t.Fatalf("%s: %v\n%s", c.name, err, o)
			}
			sameFile(t, out, data)
		})
	}
	t.Run("mtftpd-get", func(t *testing.T) {
		for _, o := range []struct{ bs, w int }{{0, 0}, {1468, 64}, {65464, 8}, {1432, 0}} {
			var buf bytes.Buffer
			c := &tftp.Client{BlockSize: o.bs, WindowSize: o.w, TSize: true}
			res, err := c.Get(context.Background(), srv.Addr, "/images/initrd.img", &buf)
			if err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			if !bytes.Equal(buf.Bytes(), data) || res.TSize != int64(len(data)) {
				t.Fatalf("%+v: got %d bytes, tsize %d", o, buf.Len(), res.TSize)
			}
		}
	})
	if got := srv.Counters.Completed.Load() + srv.Counters.Unconfirmed.Load(); got == 0 {
		t.Fatal("no transfer counted as completed")
	}
}

// TestWindowBatching: at windowsize 64 a window leaves in a handful of
// syscalls, not 64 (the issue asks for at least 16 datagrams per call).
func TestWindowBatching(t *testing.T) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "f"), 8<<20, 2)
	srv := startServer(t, root, nil)
	var buf bytes.Buffer
	c := &tftp.Client{BlockSize: 1468, WindowSize: 64}
	if _, err := c.Get(context.Background(), srv.Addr, "f", &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("content differs")
	}
	dg, calls := srv.Counters.DataSent.Load(), srv.Counters.SendSyscalls.Load()
	t.Logf("%d datagrams in %d send syscalls (%.1f per call)", dg, calls, float64(dg)/float64(calls))
	if calls == 0 || dg/calls < 16 {
		t.Fatalf("%d datagrams in %d syscalls: fewer than 16 per call", dg, calls)
	}
}

// TestRolloverReal: a file past 65535 blocks of 512 bytes needs the block
// number to wrap; curl (wraps to 0) and our client must get every byte.
func TestRolloverReal(t *testing.T) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "big"), 65535*512+10*512+99, 3)
	srv := startServer(t, root, nil)
	var buf bytes.Buffer
	c := &tftp.Client{BlockSize: 512, WindowSize: 16}
	if res, err := c.Get(context.Background(), srv.Addr, "big", &buf); err != nil || res.Blocks <= 65535 {
		t.Fatalf("get: %v (blocks %d)", err, res.Blocks)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("content differs after rollover")
	}
	bin := need(t, "curl")
	out := filepath.Join(t.TempDir(), "out")
	if o, err := run(t, "", bin, "-sS", "--tftp-blksize", "512", "-o", out, "tftp://"+srv.Addr+"/big"); err != nil {
		t.Fatalf("curl: %v\n%s", err, o)
	}
	sameFile(t, out, data)
}

// TestNetascii: LF → CR LF and CR → CR NUL on the wire, back to the same
// text at tftp-hpa and at our client; tsize is the converted length.
func TestNetascii(t *testing.T) {
	root := t.TempDir()
	text := []byte("line one\nline two\r\nbare\rcr\n" + strings.Repeat("0123456789abcdef\n", 200) + "end\r")
	os.WriteFile(filepath.Join(root, "menu.cfg"), text, 0o644)
	srv := startServer(t, root, nil)
	var buf bytes.Buffer
	c := &tftp.Client{Mode: "netascii", TSize: true}
	res, err := c.Get(context.Background(), srv.Addr, "menu.cfg", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), text) {
		t.Fatalf("netascii round trip:\n got %q\nwant %q", buf.Bytes()[:40], text[:40])
	}
	wire := int64(len(text) + bytes.Count(text, []byte("\n")) + bytes.Count(text, []byte("\r")))
	if res.TSize != wire {
		t.Fatalf("tsize %d, want converted length %d", res.TSize, wire)
	}
	bin := need(t, "tftp")
	out := filepath.Join(t.TempDir(), "out")
	if o, err := run(t, "", bin, "-m", "netascii", "127.0.0.1", strconv.Itoa(srv.Port), "-c", "get", "menu.cfg", out); err != nil {
		t.Fatalf("tftp-hpa: %v\n%s", err, o)
	}
	sameFile(t, out, text)
}

// TestJail: names that leave the root are refused with an ERROR, while
// firmware spellings (/name, \dir\name) resolve inside it.
func TestJail(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	secret := writeRandom(t, filepath.Join(parent, "secret"), 100, 4)
	_ = secret
	boot := writeRandom(t, filepath.Join(root, "boot", "bcd"), 1000, 5)
	pxe := writeRandom(t, filepath.Join(root, "pxelinux.0"), 2000, 6)
	os.Symlink("../secret", filepath.Join(root, "rel-out"))
	os.Symlink("/etc/passwd", filepath.Join(root, "abs-out"))
	os.Symlink("boot/bcd", filepath.Join(root, "inside"))
	testutil.Mkfifo(filepath.Join(root, "fifo"))
	os.Mkdir(filepath.Join(root, "dir"), 0o755)
	srv := startServer(t, root, nil)

	ok := map[string][]byte{"/pxelinux.0": pxe, `\boot\bcd`: boot, "//boot//bcd": boot, "inside": boot, "boot/./bcd": boot}
	for name, want := range ok {
		var buf bytes.Buffer
		if _, err := (&tftp.Client{}).Get(context.Background(), srv.Addr, name, &buf); err != nil {
			t.Errorf("%q: %v", name, err)
		} else if !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("%q: wrong content", name)
		}
	}
	refused := []string{"../secret", "/../secret", `..\secret`, `\..\secret`, "boot/../../secret", "rel-out", "abs-out",
		"fifo", "dir", "/", "a\x00b", strings.Repeat("a/", 300) + "x", "%2e%2e/secret", "....//secret"}
	for _, name := range refused {
		_, err := (&tftp.Client{Retries: 2, Timeout: 200 * time.Millisecond}).Get(context.Background(), srv.Addr, name, &bytes.Buffer{})
		var re *tftp.RemoteError
		if !errors.As(err, &re) || (re.Code != tftp.ErrCodeAccess && re.Code != tftp.ErrCodeNotFound && re.Code != tftp.ErrCodeIllegalOp) {
			t.Errorf("%q: got %v, want an access/not-found ERROR", name, err)
		}
	}
}

// TestUpload: WRQ is refused by default; with a write directory, tftp-hpa
// and atftp uploads land whole, an existing name is refused with ERROR 6,
// and no temp file is left behind.
func TestUpload(t *testing.T) {
	root, up := t.TempDir(), t.TempDir()
	srcDir := t.TempDir()
	payload := writeRandom(t, filepath.Join(srcDir, "log.bin"), 300_001, 7)
	closed := startServer(t, root, nil)
	hpa := need(t, "tftp")
	o, _ := run(t, srcDir, hpa, "-m", "binary", "127.0.0.1", strconv.Itoa(closed.Port), "-c", "put", "log.bin", "x.bin")
	if !strings.Contains(strings.ToLower(o), "disabled") && !strings.Contains(strings.ToLower(o), "access") {
		t.Fatalf("upload to a read-only server: %q", o)
	}

	srv := startServer(t, root, func(s *tftp.Server) { s.WriteDir = up })
	if o, err := run(t, srcDir, hpa, "-m", "binary", "127.0.0.1", strconv.Itoa(srv.Port), "-c", "put", "log.bin", "hpa.bin"); err != nil || strings.Contains(o, "Error") {
		t.Fatalf("tftp-hpa put: %v %s", err, o)
	}
	sameFile(t, filepath.Join(up, "hpa.bin"), payload)
	at := need(t, "atftp")
	if o, err := run(t, srcDir, at, "--option", "blksize 1468", "-p", "-l", "log.bin", "-r", "atftp.bin", "127.0.0.1", strconv.Itoa(srv.Port)); err != nil {
		t.Fatalf("atftp put: %v %s", err, o)
	}
	sameFile(t, filepath.Join(up, "atftp.bin"), payload)
	o, _ = run(t, srcDir, hpa, "-m", "binary", "127.0.0.1", strconv.Itoa(srv.Port), "-c", "put", "log.bin", "hpa.bin")
	if !strings.Contains(strings.ToLower(o), "exist") {
		t.Fatalf("overwrite not refused: %q", o)
	}
	ents, _ := os.ReadDir(up)
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("upload dir holds %v, want exactly the two uploads", names)
	}
}

// TestFileChangesUnderTransfer: a file replaced on disk (rename over it)
// keeps serving its old bytes to the running transfer while new requests
// get the new file; a file truncated in place ends its transfer with an
// ERROR, and the server keeps serving others.
func TestFileChangesUnderTransfer(t *testing.T) { bothModes(t, testFileChangesUnderTransfer) }

func testFileChangesUnderTransfer(t *testing.T, single bool) {
	root := t.TempDir()
	path := filepath.Join(root, "initrd.img")
	old := writeRandom(t, path, 4<<20, 10)
	other := writeRandom(t, filepath.Join(root, "other"), 1<<20, 11)
	srv := startServer(t, root, singlePort(single))

	// Pause a download after its first MiB (the progress callback blocks),
	// replace the file, then let it finish.
	paused, resume := make(chan struct{}), make(chan struct{})
	var once bool
	w := 8
	if single {
		w = 1 // the event loop's own transfer: a window gets a port of its own
	}
	c := &tftp.Client{BlockSize: 1468, WindowSize: w, Progress: func(got, _ int64) {
		if got >= 1<<20 && !once {
			once = true
			close(paused)
			<-resume
		}
	}}
	var buf bytes.Buffer
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), srv.Addr, "initrd.img", &buf)
		errc <- err
	}()
	<-paused
	tmp := filepath.Join(root, ".new")
	fresh := writeRandom(t, tmp, 3<<20, 12)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	var nb bytes.Buffer
	if _, err := (&tftp.Client{BlockSize: 1468}).Get(context.Background(), srv.Addr, "initrd.img", &nb); err != nil || !bytes.Equal(nb.Bytes(), fresh) {
		t.Fatalf("new request after replace: %v, %d bytes", err, nb.Len())
	}
	close(resume)
	if err := <-errc; err != nil || !bytes.Equal(buf.Bytes(), old) {
		t.Fatalf("running transfer after replace: %v, %d bytes (want the old %d)", err, buf.Len(), len(old))
	}

	// Truncate in place under a paused transfer.
	paused, resume, once = make(chan struct{}), make(chan struct{}), false
	buf.Reset()
	go func() {
		_, err := c.Get(context.Background(), srv.Addr, "initrd.img", &buf)
		errc <- err
	}()
	<-paused
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	close(resume)
	err := <-errc
	var re *tftp.RemoteError
	if !errors.As(err, &re) || re.Code != tftp.ErrCodeUndefined || !strings.Contains(re.Message, "changed") {
		t.Fatalf("truncated file: got %v, want ERROR 0 'file changed during transfer'", err)
	}
	var ob bytes.Buffer
	if _, err := (&tftp.Client{}).Get(context.Background(), srv.Addr, "other", &ob); err != nil || !bytes.Equal(ob.Bytes(), other) {
		t.Fatalf("server after a truncated transfer: %v", err)
	}
}

// TestReplyFromRequestAddress: with the server listening on 0.0.0.0, a
// request sent to 127.0.0.2 is answered from 127.0.0.2 (IP_PKTINFO), or a
// client that checks the source (ours does, like iPXE) would never hear it.
func TestReplyFromRequestAddress(t *testing.T) { bothModes(t, testReplyFromRequestAddress) }

func testReplyFromRequestAddress(t *testing.T, single bool) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "f"), 100_000, 13)
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := &tftp.Server{Files: store, SinglePort: single}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc) }()
	defer func() { cancel(); <-done }()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	for _, host := range []string{"127.0.0.1", "127.0.0.2"} {
		var buf bytes.Buffer
		// Generous retries: under -race on a loaded 2-core machine the first
		// answer has taken longer than 3 × 300 ms (seen in a full package run).
		res, err := (&tftp.Client{Retries: 4, Timeout: time.Second}).Get(context.Background(), fmt.Sprintf("%s:%d", host, port), "f", &buf)
		if err != nil {
			t.Fatalf("request to %s: %v", host, err)
		}
		if res.ServerAddr.Addr().String() != host || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("request to %s answered from %s", host, res.ServerAddr)
		}
	}
}

// TestSessionLimits: a client over its per-address limit is refused with
// an ERROR naming that limit ("address busy", not "server busy") while its
// first transfer runs; the next request after it is
// served again.
func TestSessionLimits(t *testing.T) { bothModes(t, testSessionLimits) }

func testSessionLimits(t *testing.T, single bool) {
	root := t.TempDir()
	writeRandom(t, filepath.Join(root, "f"), 2<<20, 14)
	srv := startServer(t, root, func(s *tftp.Server) { s.MaxPerClient, s.SinglePort = 1, single })
	paused, resume := make(chan struct{}), make(chan struct{})
	first := true
	c := &tftp.Client{Progress: func(got, _ int64) {
		if first && got > 100_000 {
			first = false
			close(paused)
			<-resume
		}
	}}
	errc := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), srv.Addr, "f", io.Discard); errc <- err }()
	<-paused
	resumed := false
	defer func() {
		if !resumed {
			close(resume)
		}
	}()
	_, err := (&tftp.Client{}).Get(context.Background(), srv.Addr, "f", io.Discard)
	var re *tftp.RemoteError
	if !errors.As(err, &re) || re.Message != tftp.MsgAddressBusy || !tftp.IsBusy(err) {
		t.Fatalf("second session from the same client: %v, want ERROR %q (the per-address limit)", err, tftp.MsgAddressBusy)
	}
	if srv.Counters.SessionLimited.Load() != 1 {
		t.Fatalf("SessionLimited = %d", srv.Counters.SessionLimited.Load())
	}
	close(resume)
	resumed = true
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The slot is released when the transfer ends (bounded wait: the
	// server may still be waiting out the final ACK).
	for i := 0; ; i++ {
		_, err := (&tftp.Client{}).Get(context.Background(), srv.Addr, "f", io.Discard)
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("still refused after the first transfer ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkSmallFileTransfer: whole transfers of a 4 KiB file (a pxelinux
// config) per second, one client at a time: the case where the per-
// transfer socket (a new TID) weighs most.
func BenchmarkSmallFileTransfer(b *testing.B) {
	root := b.TempDir()
	writeRandom(b, filepath.Join(root, "cfg"), 4096, 15)
	srv := startServer(b, root, func(s *tftp.Server) { s.Log = zerolog.Nop() })
	c := &tftp.Client{BlockSize: 1468}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(context.Background(), srv.Addr, "cfg", io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMalformedRequests: garbage to the request port never gets a reply
// larger than itself (no amplification), and stray DATA/ACK get none.
func TestMalformedRequests(t *testing.T) {
	srv := startServer(t, t.TempDir(), nil)
	c, err := net.Dial("udp4", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reply := func(pkt string) []byte {
		c.Write([]byte(pkt))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b := make([]byte, 2048)
		n, err := c.Read(b)
		if err != nil {
			return nil
		}
		return b[:n]
	}
	// The last parses but names no mode (its ERROR would quote it).
	for _, pkt := range []string{"\x00\x01x", "\x00\x04\x00\x01", "\x00\x03\x00\x01data", "\xff", "\x00\x01f\x00octet",
		"\x00\x01f\x00x\x00", "\x00\x02f\x00xyz\x00"} {
		if r := reply(pkt); r != nil && len(r) > len(pkt) {
			t.Errorf("%q (%d bytes) got a %d-byte reply", pkt, len(pkt), len(r))
		}
	}
	long := "\x00\x01" + strings.Repeat("a", 60) + "\x00octet-without-its-nul" // mode not terminated
	r := reply(long)
	if r == nil || tftp.PacketOpcode(r) != tftp.OpERROR || len(r) > len(long) {
		t.Fatalf("malformed 80-byte request: reply %q", r)
	}
	if srv.Counters.BadRequest.Load() == 0 || srv.Counters.BadPacket.Load() == 0 {
		t.Fatalf("counters: bad request %d, bad packet %d", srv.Counters.BadRequest.Load(), srv.Counters.BadPacket.Load())
	}
}

// TestDuplicateRequest: a client that repeats its RRQ (first reply slow)
// gets one transfer, from one TID.
func TestDuplicateRequest(t *testing.T) { bothModes(t, testDuplicateRequest) }

func testDuplicateRequest(t *testing.T, single bool) {
	root := t.TempDir()
	writeRandom(t, filepath.Join(root, "f"), 2000, 16)
	srv := startServer(t, root, singlePort(single))
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst, _ := net.ResolveUDPAddr("udp4", srv.Addr)
	rrq := (&tftp.Request{Op: tftp.OpRRQ, Filename: "f", Mode: "octet"}).Marshal(nil)
	c.WriteToUDP(rrq, dst)
	c.WriteToUDP(rrq, dst)
	tids := map[string]bool{}
	buf := make([]byte, 1024)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, from, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		tids[from.String()] = true
	}
	if len(tids) != 1 || srv.Counters.DupRequest.Load() != 1 {
		t.Fatalf("replies from %d TIDs, %d duplicates counted; want 1 and 1", len(tids), srv.Counters.DupRequest.Load())
	}
}

// TestClientLocalAddr: a client with LocalAddr sends from that address
// (the server logs it as the peer), and one that cannot bind says so.
func TestClientLocalAddr(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("binding 127.0.0.2 needs Linux's 127.0.0.0/8 loopback")
	}
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "f"), 10_000, 3)
	var logs testutil.SyncBuffer
	ts := startServer(t, root, func(s *tftp.Server) { s.Log = zerolog.New(&logs) })
	c := &tftp.Client{BlockSize: 1468, LocalAddr: netip.MustParseAddr("127.0.0.2")}
	var got bytes.Buffer
	if _, err := c.Get(context.Background(), ts.Addr, "f", &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("get from 127.0.0.2: %v, %d bytes", err, got.Len())
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), `"client":"127.0.0.2:`); {
		if time.Now().After(deadline) {
			t.Fatalf("server never logged a transfer to 127.0.0.2:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.LocalAddr = netip.MustParseAddr("192.0.2.254") // TEST-NET, never local here
	if _, err := c.Get(context.Background(), ts.Addr, "f", io.Discard); err == nil || !strings.Contains(err.Error(), "assign") {
		t.Fatalf("get from a foreign address: %v, want a bind error", err)
	}
}
