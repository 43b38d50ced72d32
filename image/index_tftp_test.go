package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// silentFirstServer is a TFTP server on loopback that never answers the
// first `silent` transfers (an RRQ and its repeats from one client port)
// and serves the later ones in RFC 1350 lock-step, 512-byte blocks, no
// options, until the client ends the transfer — or answers them with
// ERROR errCode.
type silentFirstServer struct {
	conn    *net.UDPConn
	img     []byte
	silent  int
	errCode tftp.ErrorCode // non-zero: a served transfer is this ERROR instead
	mu      sync.Mutex
	clients []*net.UDPAddr // the distinct client ports that asked, in order
	wg      sync.WaitGroup
}

func newSilentFirstServer(t *testing.T, img []byte, silent int, errCode tftp.ErrorCode) *silentFirstServer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &silentFirstServer{conn: c, img: img, silent: silent, errCode: errCode}
	s.wg.Add(1)
	go s.listen()
	t.Cleanup(func() { c.Close(); s.wg.Wait() })
	return s
}

func (s *silentFirstServer) addr() string { return s.conn.LocalAddr().String() }

func (s *silentFirstServer) asked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

func (s *silentFirstServer) listen() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if n < 2 || binary.BigEndian.Uint16(buf) != 1 { // RRQ
			continue
		}
		s.mu.Lock()
		seen := false
		for _, c := range s.clients {
			seen = seen || c.String() == from.String()
		}
		if !seen {
			s.clients = append(s.clients, from)
		}
		serve := !seen && len(s.clients) > s.silent
		s.mu.Unlock()
		if serve {
			s.wg.Add(1)
			go s.send(from)
		}
	}
}

// send is one lock-step transfer from a port of its own; it ends at the
// file's end, on the client's ERROR, or after 5 unanswered sends.
func (s *silentFirstServer) send(to *net.UDPAddr) {
	defer s.wg.Done()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return
	}
	defer c.Close()
	if s.errCode != 0 {
		c.WriteToUDP(tftp.AppendError(nil, s.errCode, "no such image"), to)
		return
	}
	pkt, in := make([]byte, 4+512), make([]byte, 1500)
	for blk := 1; (blk-1)*512 <= len(s.img); blk++ {
		data := s.img[(blk-1)*512 : min(blk*512, len(s.img))]
		binary.BigEndian.PutUint16(pkt, 3)
		binary.BigEndian.PutUint16(pkt[2:], uint16(blk))
		out := append(pkt[:4], data...)
		acked := false
		for try := 0; try < 5 && !acked; try++ {
			c.WriteToUDP(out, to)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := c.ReadFromUDP(in)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			switch {
			case n >= 2 && binary.BigEndian.Uint16(in) == 5: // ERROR: the client has what it wanted
				return
			case n >= 4 && binary.BigEndian.Uint16(in) == 4 && int(binary.BigEndian.Uint16(in[2:])) == blk:
				acked = true
			}
		}
		if !acked {
			return
		}
	}
}

// An index read that gets no answer is started again as a new transfer:
// the deploy gets its index from the second. So does the size probe.
func TestFetchIndexTFTPAsksAgain(t *testing.T) {
	cs := MinChunkSize
	chunk := bytes.Repeat([]byte("0123456789abcdef"), cs/16)
	img := buildImage(t, cs, int64(3*cs), [][]byte{chunk, nil, chunk})
	want, err := ReadIndex(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 200 ms, 1 retry: a silent transfer fails in 0.6 s; a served one
	// survives a stall of the test process shorter than that (if it does
	// not, a third transfer serves it: at least two are asked for).
	srv := newSilentFirstServer(t, img, 1, 0)
	d := &Deployer{Opts: DeployOptions{Server: srv.addr(), Image: "images/x.img", BlockSize: 512},
		tftpTimeout: 200 * time.Millisecond, tftpRetries: 1}
	ix, err := d.fetchIndex(ctx)
	if err != nil {
		t.Fatalf("fetchIndex: %v (%d transfers asked for)", err, srv.asked())
	}
	if ix.Header.IndexDigest != want.Header.IndexDigest || len(ix.Entries) != len(want.Entries) {
		t.Fatalf("index %+v, want %+v", ix.Header, want.Header)
	}
	if n := srv.asked(); n < 2 {
		t.Fatalf("%d transfers asked for, want the silent one and one more", n)
	}

	srv = newSilentFirstServer(t, img, 1, 0)
	d.Opts.Server = srv.addr()
	if size, err := d.serverSize(ctx); err != nil || size != -1 {
		t.Fatalf("serverSize: %d, %v; want -1 (the server sends no tsize), nil", size, err)
	}
	if n := srv.asked(); n < 2 {
		t.Fatalf("size probe: %d transfers asked for, want the silent one and one more", n)
	}
}

// A server that never answers costs tftpReads transfers, and the error
// says there was no answer, and how often it was asked.
func TestFetchIndexTFTPGivesUp(t *testing.T) {
	srv := newSilentFirstServer(t, nil, 1000, 0)
	d := &Deployer{Opts: DeployOptions{Server: srv.addr(), Image: "images/x.img", BlockSize: 512},
		tftpTimeout: 20 * time.Millisecond, tftpRetries: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.fetchIndex(ctx)
	if !errors.Is(err, tftp.ErrNoAnswer) || !strings.Contains(err.Error(), "3 reads") {
		t.Fatalf("fetchIndex: %v, want no answer after 3 reads", err)
	}
	if n := srv.asked(); n != tftpReads {
		t.Fatalf("%d transfers asked for, want %d", n, tftpReads)
	}
}

// The server's answer is final: "file not found" is not asked again.
func TestFetchIndexTFTPNotFoundOnce(t *testing.T) {
	srv := newSilentFirstServer(t, nil, 0, tftp.ErrCodeNotFound)
	d := &Deployer{Opts: DeployOptions{Server: srv.addr(), Image: "images/x.img", BlockSize: 512},
		tftpTimeout: 200 * time.Millisecond, tftpRetries: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.fetchIndex(ctx)
	if !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("fetchIndex: %v, want ErrImageNotFound", err)
	}
	if n := srv.asked(); n != 1 {
		t.Fatalf("%d transfers asked for, want 1", n)
	}
}
