package tftp_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// put uploads data as name in lock-step 512-byte blocks over raw packets
// (the package's client only reads), announcing its size with tsize if
// asked. It returns the server's ERROR as a *tftp.RemoteError. Every wait
// is bounded.
func put(t *testing.T, addr, name string, data []byte, tsize bool) error {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst, _ := net.ResolveUDPAddr("udp4", addr)
	req := tftp.Request{Op: tftp.OpWRQ, Filename: name, Mode: "octet"}
	if tsize {
		req.Options = []tftp.Option{{Name: "tsize", Value: fmt.Sprint(len(data))}}
	}
	wrq := req.Marshal(nil)
	buf := make([]byte, 1024)
	var tid *net.UDPAddr
	// expect waits for the ACK of block n (an OACK stands for ACK 0),
	// resending pkt to to once a second.
	expect := func(n uint16, pkt []byte, to *net.UDPAddr) error {
		for try := 0; try < 5; try++ {
			c.WriteToUDP(pkt, to)
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				k, from, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				switch tftp.PacketOpcode(buf[:k]) {
				case tftp.OpERROR:
					code, msg, _ := tftp.ParseError(buf[:k])
					return &tftp.RemoteError{Code: code, Message: msg}
				case tftp.OpOACK:
					if n == 0 {
						tid = from
						return nil
					}
				case tftp.OpACK:
					if b, _ := tftp.ParseAck(buf[:k]); b == n {
						tid = from
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no ACK %d", n)
	}
	if err := expect(0, wrq, dst); err != nil {
		return err
	}
	for n, off := uint16(1), 0; ; n++ {
		end := min(off+512, len(data))
		pkt := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, uint16(tftp.OpDATA)), n)
		if err := expect(n, append(pkt, data[off:end]...), tid); err != nil {
			return err
		}
		if end-off < 512 {
			return nil
		}
		off = end
	}
}

// names lists a directory tree's files, relative and sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestUploadTempFileAfterData performs finding 11's first attack: a WRQ
// from a source that never sends DATA (spoofed). Its temp file used to be
// created at once; now nothing is created until the first DATA comes from
// the client's address on the transfer's port.
func TestUploadTempFileAfterData(t *testing.T) {
	up := t.TempDir()
	// The short confirm timeout only makes the server's shutdown quick.
	srv := startServer(t, t.TempDir(), func(s *tftp.Server) { s.WriteDir, s.ConfirmTimeout = up, time.Second })
	dst, _ := net.ResolveUDPAddr("udp4", srv.Addr)
	const wrqs = 10
	var socks []*net.UDPConn
	for i := range wrqs {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.WriteToUDP((&tftp.Request{Op: tftp.OpWRQ, Filename: fmt.Sprintf("spoofed-%d.bin", i), Mode: "octet"}).Marshal(nil), dst)
		socks = append(socks, c)
	}
	// Each request's ACK 0 comes after the server has done what it does
	// before it waits for DATA.
	buf := make([]byte, 100)
	for i, c := range socks {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := c.ReadFromUDP(buf)
		if b, perr := tftp.ParseAck(buf[:k]); err != nil || perr != nil || b != 0 {
			t.Fatalf("WRQ %d: no ACK 0 (%v, %v)", i, err, perr)
		}
	}
	if got := names(t, up); len(got) != 0 {
		t.Fatalf("%d WRQs that never sent DATA left %d files in the write directory: %v", wrqs, len(got), got)
	}
	// A real upload still lands.
	data := make([]byte, 3000)
	if err := put(t, srv.Addr, "real.bin", data, true); err != nil {
		t.Fatal(err)
	}
	if got := names(t, up); len(got) != 1 || got[0] != "real.bin" {
		t.Fatalf("after one upload the write directory holds %v", got)
	}
}

// TestUploadQuota performs finding 11's second attack: uploads until the
// disk is full. The write directory holds at most WriteQuota bytes, files
// already there included: an upload that would pass it gets ERROR 3 (disk
// full) and leaves nothing behind, one that announces a size past it is
// refused at once, and a smaller one still fits.
func TestUploadQuota(t *testing.T) {
	up := t.TempDir()
	os.WriteFile(filepath.Join(up, "old.bin"), make([]byte, 100_000), 0o644)
	srv := startServer(t, t.TempDir(), func(s *tftp.Server) { s.WriteDir = up; s.WriteQuota = 300_000 })
	if err := put(t, srv.Addr, "a.bin", make([]byte, 150_000), true); err != nil {
		t.Fatalf("150,000 bytes into 200,000 free: %v", err)
	}
	// 100,000 more do not fit in the 50,000 left: refused at once when
	// announced, stopped at the quota when not.
	for _, tsize := range []bool{true, false} {
		var re *tftp.RemoteError
		if err := put(t, srv.Addr, "b.bin", make([]byte, 100_000), tsize); !errors.As(err, &re) || re.Code != tftp.ErrCodeDiskFull {
			t.Fatalf("100,000 bytes into 50,000 free (tsize %v): %v, want ERROR 3 (disk full)", tsize, err)
		}
	}
	if err := put(t, srv.Addr, "c.bin", make([]byte, 40_000), false); err != nil {
		t.Fatalf("40,000 bytes into 50,000 free: %v", err)
	}
	var total int64
	for _, n := range names(t, up) {
		fi, _ := os.Stat(filepath.Join(up, n))
		total += fi.Size()
	}
	if got := names(t, up); len(got) != 3 || total > 300_000 {
		t.Fatalf("write directory holds %v, %d bytes; want old, a, c within the 300,000-byte quota", got, total)
	}
}

// TestUploadSweep: temp files left by a crash (".name.part-<12 hex>", the
// names uploads write to) are removed when the server starts; nothing
// else in the write directory is touched.
func TestUploadSweep(t *testing.T) {
	up := t.TempDir()
	for _, n := range []string{".a.bin.part-0123456789ab", "sub/.b.cfg.part-abcdef012345",
		"keep.bin", "keep.part-0123456789ab", ".x.part-zz", "sub/.y.part-0123"} {
		os.MkdirAll(filepath.Dir(filepath.Join(up, n)), 0o755)
		os.WriteFile(filepath.Join(up, n), []byte("x"), 0o644)
	}
	startServer(t, t.TempDir(), func(s *tftp.Server) { s.WriteDir = up })
	// Serve sweeps before it reads its first request: wait until it runs.
	want := []string{".x.part-zz", "keep.bin", "keep.part-0123456789ab", "sub/.y.part-0123"}
	var got []string
	for i := 0; i < 500; i++ {
		if got = names(t, up); fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("write directory after start: %v, want %v", got, want)
}
