package tftp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
)

// memUpload is an upload kept in memory.
type memUpload struct {
	mu        sync.Mutex
	data      []byte
	committed bool
}

func (u *memUpload) WriteAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if end := int(off) + len(p); end > len(u.data) {
		u.data = append(u.data, make([]byte, end-len(u.data))...)
	}
	copy(u.data[off:], p)
	return len(p), nil
}

func (u *memUpload) Commit() error { u.mu.Lock(); u.committed = true; u.mu.Unlock(); return nil }
func (u *memUpload) Abort()        {}

func (u *memUpload) bytes() ([]byte, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return bytes.Clone(u.data), u.committed
}

var writeTiming = timing{InitialRTO: time.Second, MinRTO: 50 * time.Millisecond, MaxRTO: 8 * time.Second,
	Retries: 6, StallTimeout: 30 * time.Second, Lifetime: time.Hour}

// startWrite runs a write session for a WRQ from peer with blksize bs and
// windowsize win (answered with an OACK) on a new endpoint of n. A test
// that ends early cancels it (in the bubble, so synctest sees it end).
func startWrite(t *testing.T, n *memnet.Net, peer netip.AddrPort, bs, win int, counters *Counters) (*memUpload, <-chan result) {
	up := &memUpload{}
	out := make(chan result, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	c := n.Listen("192.0.2.1")
	ack := []Option{{OptBlockSize, fmt.Sprint(bs)}, {OptWindowSize, fmt.Sprint(win)}}
	ws := &writeSession{c: c, peer: peer, neg: Negotiated{BlockSize: bs, WindowSize: win, TSize: -1, Ack: ack},
		oack: AppendOACK(nil, ack), counters: counters, timing: writeTiming,
		open: func() (upload, error) { return up, nil }}
	go func() {
		defer close(done)
		defer c.Close()
		out <- ws.run(ctx)
	}()
	return up, out
}

// dataPacket is DATA block wire (its number in every payload byte).
func dataPacket(wire uint16, size int) []byte {
	p := make([]byte, HeaderLen, HeaderLen+size)
	PutDataHeader(p, wire)
	return append(p, bytes.Repeat([]byte{byte(wire)}, size)...)
}

// TestUploadHoldsReordered: the WRQ server now has the client's receive
// rules (tftp/recv.go). A window whose blocks 2 and 3 swap places on the
// path is held and ACKed once at its end; the server used to report a gap
// at once (ACK 1, then ACK 2), which makes a sender resend blocks that
// were only late. A duplicate mid-window is not answered either; the
// server used to re-ACK it once half a timer had passed, which reads as a
// gap report too.
func TestUploadHoldsReordered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sends []any // a block number to send, or a pause
	}{
		{"reordered", []any{1, 3, 2, 4}},
		{"duplicate mid-window", []any{1, 2, 600 * time.Millisecond, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(1)
				cl := n.Listen("192.0.2.10")
				defer cl.Close()
				up, out := startWrite(t, n, cl.Addr(), 512, 4, &Counters{})
				buf := make([]byte, 600)
				cl.SetReadDeadline(time.Now().Add(time.Second))
				k, srv, err := cl.ReadFrom(buf)
				if err != nil || PacketOpcode(buf[:k]) != OpOACK {
					t.Fatalf("no OACK: %v", err)
				}
				acks := func() (got []uint16) {
					for {
						cl.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
						k, _, err := cl.ReadFrom(buf)
						if err != nil {
							return got
						}
						b, err := ParseAck(buf[:k])
						if err != nil {
							t.Fatalf("not an ACK: %v", err)
						}
						got = append(got, b)
					}
				}
				for _, s := range tc.sends {
					switch s := s.(type) {
					case int:
						cl.WriteTo(dataPacket(uint16(s), 512), srv)
					case time.Duration:
						time.Sleep(s)
					}
				}
				if got := acks(); fmt.Sprint(got) != "[4]" {
					t.Fatalf("window sent as %v: server ACKed %v, want [4] (one ACK at the window's end)", tc.sends, got)
				}
				cl.WriteTo(dataPacket(5, 100), srv)
				if got := acks(); fmt.Sprint(got) != "[5]" {
					t.Fatalf("final block: ACKs %v, want [5]", got)
				}
				r := <-out
				data, committed := up.bytes()
				want := append(bytes.Repeat([]byte{1}, 512), bytes.Repeat([]byte{2}, 512)...)
				want = append(append(want, bytes.Repeat([]byte{3}, 512)...), bytes.Repeat([]byte{4}, 512)...)
				want = append(want, bytes.Repeat([]byte{5}, 100)...)
				if r.Outcome != OutcomeOK || !committed || !bytes.Equal(data, want) {
					t.Fatalf("outcome %s (%v), committed %v, %d bytes (want %d, equal %v)",
						r.Outcome, r.Err, committed, len(data), len(want), bytes.Equal(data, want))
				}
			})
		})
	}
}

// memPut uploads data to a write session already running for cl, as a
// windowed WRQ sender does (the window state of tftp/window.go, a fixed
// 100 ms timer). It returns how many DATA datagrams it sent; it stops
// after 30 timeouts in a row (the final ACK may be lost for good).
func memPut(cl *memnet.Conn, data []byte, bs, win int) (sent uint64, err error) {
	buf := make([]byte, 600)
	cl.SetReadDeadline(time.Now().Add(time.Minute))
	var srv netip.AddrPort
	for srv == (netip.AddrPort{}) { // the OACK, from the session's TID
		k, from, err := cl.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no OACK: %w", err)
		}
		if PacketOpcode(buf[:k]) == OpOACK {
			srv = from
		}
	}
	w := window{size: uint64(win), final: BlockCount(int64(len(data)), bs)}
	send := func() {
		from, to := w.next()
		for b := from; b <= to; b++ {
			off := int((b - 1) * uint64(bs))
			p := make([]byte, HeaderLen)
			PutDataHeader(p, wireBlock(b, 0))
			cl.WriteTo(append(p, data[off:min(off+bs, len(data))]...), srv)
			sent++
		}
	}
	send()
	for timeouts := 0; timeouts < 30; {
		cl.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		k, _, err := cl.ReadFrom(buf)
		if err != nil {
			timeouts++
			send()
			continue
		}
		wire, err := ParseAck(buf[:k])
		if err != nil {
			continue // a repeated OACK: our timer resends
		}
		blk, ok := unwrapBlock(wire, w.acked, w.sent, 0)
		if !ok {
			continue
		}
		switch w.onAck(blk) {
		case ackDone:
			return sent, nil
		case ackWindow, ackGap:
			timeouts = 0
			send()
		}
	}
	return sent, fmt.Errorf("final ACK not seen after 30 timeouts")
}

// TestUploadImpaired uploads through loss, duplication and reordering to
// the write session in virtual time: every upload lands intact, and
// without loss the sender sends each block once (plus a window per rare
// timer). Reordering alone made the server report gaps at once, and the
// sender resend blocks that were only late.
func TestUploadImpaired(t *testing.T) {
	for _, im := range []struct {
		name               string
		loss, dup, reorder float64
	}{
		{"clean", 0, 0, 0}, {"loss10", 0.10, 0, 0}, {"dup10", 0, 0.10, 0},
		{"reorder10", 0, 0, 0.10}, {"mixed", 0.05, 0.05, 0.05},
	} {
		for _, win := range []int{1, 8, 32} {
			for _, size := range []int{0, 1468, 100_003} {
				t.Run(fmt.Sprintf("%s/w%d/%d", im.name, win, size), func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						n := memnet.New(uint64(size + win))
						n.Loss, n.Dup, n.Reorder = im.loss, im.dup, im.reorder
						cl := n.Listen("192.0.2.10")
						defer cl.Close()
						data := testData(size, uint64(size))
						up, out := startWrite(t, n, cl.Addr(), 1468, win, &Counters{})
						sent, perr := memPut(cl, data, 1468, win)
						r := <-out
						got, committed := up.bytes()
						if r.Outcome != OutcomeOK || !committed || !bytes.Equal(got, data) {
							t.Fatalf("outcome %s (%v), committed %v, %d of %d bytes; sender: %v",
								r.Outcome, r.Err, committed, len(got), len(data), perr)
						}
						blocks := BlockCount(int64(size), 1468)
						if im.loss == 0 && sent > blocks+uint64(win) {
							t.Fatalf("sent %d datagrams for %d blocks with dup %.2f reorder %.2f: resends without loss",
								sent, blocks, im.dup, im.reorder)
						}
					})
				})
			}
		}
	}
}
