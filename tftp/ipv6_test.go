package tftp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/testutil"
	"github.com/mtftpd/mtftpd/tftp"
)

var loopback6 = netip.MustParseAddrPort("[::1]:0")

// TestIPv6Clients: real clients read over ::1 (curl tftp://[::1]:port/,
// atftp, tftp-hpa -6) with the options firmware uses, and the package's
// client with windows, in both modes (docs/design.md, "IPv6").
func TestIPv6Clients(t *testing.T) { bothModes(t, testIPv6Clients) }

func testIPv6Clients(t *testing.T, single bool) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "images", "initrd.img"), 1<<20+333, 61)
	srv := startServerAt(t, loopback6, root, singlePort(single))
	port := strconv.Itoa(srv.Port)
	url := "tftp://" + srv.Addr + "/images/initrd.img"
	if srv.Addr != "[::1]:"+port {
		t.Fatalf("server address %s", srv.Addr)
	}
	cases := []struct {
		name, bin string
		args      func(out string) []string
	}{
		{"curl-512", "curl", func(out string) []string { return []string{"-sS", "-o", out, url} }},
		{"curl-1432", "curl", func(out string) []string { return []string{"-sS", "--tftp-blksize", "1432", "-o", out, url} }},
		{"atftp-1468-w16", "atftp", func(out string) []string {
			return []string{"--option", "blksize 1468", "--option", "windowsize 16", "--option", "tsize", "-g", "-r", "images/initrd.img", "-l", out, "::1", port}
		}},
		{"tftp-hpa-6", "tftp", func(out string) []string {
			return []string{"-6", "-m", "binary", "::1", port, "-c", "get", "images/initrd.img", out}
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
	for _, o := range []struct{ bs, w int }{{0, 0}, {1468, 64}, {65464, 8}} {
		var buf bytes.Buffer
		res, err := (&tftp.Client{BlockSize: o.bs, WindowSize: o.w, TSize: true}).Get(context.Background(), srv.Addr, "images/initrd.img", &buf)
		if err != nil {
			t.Fatalf("mtftpd get %+v: %v", o, err)
		}
		if !bytes.Equal(buf.Bytes(), data) || res.TSize != int64(len(data)) || res.ServerAddr.Addr() != loopback6.Addr() {
			t.Fatalf("mtftpd get %+v: %d bytes, tsize %d, from %s", o, buf.Len(), res.TSize, res.ServerAddr)
		}
	}
}

// TestIPv6Upload: WRQ over ::1 with tftp-hpa -6 and atftp lands whole.
func TestIPv6Upload(t *testing.T) {
	root, up, src := t.TempDir(), t.TempDir(), t.TempDir()
	payload := writeRandom(t, filepath.Join(src, "log.bin"), 200_003, 62)
	srv := startServerAt(t, loopback6, root, func(s *tftp.Server) { s.WriteDir = up })
	port := strconv.Itoa(srv.Port)
	hpa, at := need(t, "tftp"), need(t, "atftp")
	if o, err := run(t, src, hpa, "-6", "-m", "binary", "::1", port, "-c", "put", "log.bin", "hpa.bin"); err != nil || strings.Contains(o, "Error") {
		t.Fatalf("tftp-hpa -6 put: %v %s", err, o)
	}
	sameFile(t, filepath.Join(up, "hpa.bin"), payload)
	if o, err := run(t, src, at, "--option", "blksize 1468", "-p", "-l", "log.bin", "-r", "atftp.bin", "::1", port); err != nil {
		t.Fatalf("atftp put over ::1: %v %s", err, o)
	}
	sameFile(t, filepath.Join(up, "atftp.bin"), payload)
}

// TestDualStack: one [::] listener serves 127.0.0.1 and ::1, each answered
// from the address it asked, and sees the IPv4 client as IPv4: with
// max_per_client 1 a second request from 127.0.0.1 while its first runs
// is refused as "address busy" while ::1 is served, and the logs name
// 127.0.0.1, never ::ffff:127.0.0.1.
func TestDualStack(t *testing.T) { bothModes(t, testDualStack) }

func testDualStack(t *testing.T, single bool) {
	root := t.TempDir()
	data := writeRandom(t, filepath.Join(root, "f"), 2<<20, 63)
	var logs testutil.SyncBuffer
	srv := startServerAt(t, netip.MustParseAddrPort("[::]:0"), root, func(s *tftp.Server) {
		s.MaxPerClient, s.SinglePort, s.Log = 1, single, zerolog.New(&logs)
	})
	v4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(srv.Port)).String()
	v6 := netip.AddrPortFrom(loopback6.Addr(), uint16(srv.Port)).String()
	for _, addr := range []string{v4, v6} {
		var buf bytes.Buffer
		res, err := (&tftp.Client{BlockSize: 1468, WindowSize: 16, Retries: 4, Timeout: time.Second}).Get(context.Background(), addr, "f", &buf)
		if err != nil || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("get from %s: %v, %d bytes", addr, err, buf.Len())
		}
		if res.ServerAddr.Addr().String() != strings.Trim(addr[:strings.LastIndex(addr, ":")], "[]") {
			t.Fatalf("request to %s answered from %s", addr, res.ServerAddr)
		}
	}

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
	go func() { _, err := c.Get(context.Background(), v4, "f", io.Discard); errc <- err }()
	<-paused
	_, busyErr := (&tftp.Client{}).Get(context.Background(), v4, "f", io.Discard)
	_, v6Err := (&tftp.Client{}).Get(context.Background(), v6, "f", io.Discard)
	close(resume)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var re *tftp.RemoteError
	if !errors.As(busyErr, &re) || re.Message != tftp.MsgAddressBusy {
		t.Fatalf("second request from 127.0.0.1: %v, want ERROR %q", busyErr, tftp.MsgAddressBusy)
	}
	if v6Err != nil {
		t.Fatalf("::1 while 127.0.0.1 is at its cap: %v", v6Err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), `"client":"127.0.0.1:`); {
		if time.Now().After(deadline) {
			t.Fatalf("no transfer logged for client 127.0.0.1:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "::ffff:") {
		t.Fatalf("a v4-mapped address reached the logs:\n%s", logs.String())
	}
}
