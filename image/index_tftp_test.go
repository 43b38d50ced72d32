package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/tftp"
)

// silentFirstServer is a TFTP server on loopback that never answers the
// first `silent` transfers (an RRQ and its repeats from one client port)
// and serves the later ones in RFC 1350 lock-step, 512-byte blocks, no
// options, until the client ends the transfer.
type silentFirstServer struct {
	conn    *net.UDPConn
	img     []byte
	silent  int
	mu      sync.Mutex
	clients []*net.UDPAddr // the distinct client ports that asked, in order
	wg      sync.WaitGroup
}

func newSilentFirstServer(t *testing.T, img []byte, silent int) *silentFirstServer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &silentFirstServer{conn: c, img: img, silent: silent}
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
// the deploy gets its index from the second.
func TestFetchIndexTFTPAsksAgain(t *testing.T) {
	cs := MinChunkSize
	chunk := bytes.Repeat([]byte("0123456789abcdef"), cs/16)
	img := buildImage(t, cs, int64(3*cs), [][]byte{chunk, nil, chunk})
	want, err := ReadIndex(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	srv := newSilentFirstServer(t, img, 1)
	d := &Deployer{Opts: DeployOptions{Server: srv.addr(), Image: "images/x.img", BlockSize: 512},
		indexTimeout: 20 * time.Millisecond, indexRetries: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ix, err := d.fetchIndex(ctx)
	if err != nil {
		t.Fatalf("fetchIndex: %v (%d transfers asked for)", err, srv.asked())
	}
	if ix.Header.IndexDigest != want.Header.IndexDigest || len(ix.Entries) != len(want.Entries) {
		t.Fatalf("index %+v, want %+v", ix.Header, want.Header)
	}
	if n := srv.asked(); n != 2 {
		t.Fatalf("%d transfers asked for, want 2 (the silent one, then one more)", n)
	}
}

// A server that never answers costs indexTries transfers, and the error
// says there was no answer.
func TestFetchIndexTFTPGivesUp(t *testing.T) {
	srv := newSilentFirstServer(t, nil, 1000)
	d := &Deployer{Opts: DeployOptions{Server: srv.addr(), Image: "images/x.img", BlockSize: 512},
		indexTimeout: 20 * time.Millisecond, indexRetries: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.fetchIndex(ctx)
	if !errors.Is(err, tftp.ErrNoAnswer) {
		t.Fatalf("fetchIndex: %v, want no answer", err)
	}
	if n := srv.asked(); n != indexTries {
		t.Fatalf("%d transfers asked for, want %d", n, indexTries)
	}
}
