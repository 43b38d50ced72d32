package tftp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// starvedConn plays a server starved of CPU (a cgroup CPU limit): every
// every-th read first loses stall of time, as a throttled process does;
// if its deadline passed meanwhile it times out without reading, as the
// Go runtime does when it runs the deadline's timer before polling the
// socket, and the peer's answer stays queued. hideLook also makes the
// read right after such a timeout miss the queued answer.
type starvedConn struct {
	*memnet.Conn
	every    int
	stall    time.Duration
	hideLook bool
	reads    int
	timedOut bool
	mu       sync.Mutex // the deadline may be set from another goroutine (a loop's wake)
	deadline time.Time
}

func (c *starvedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *starvedConn) readDeadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline
}

func (c *starvedConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	c.reads++
	look := c.timedOut
	c.timedOut = false
	if look && c.hideLook {
		time.Sleep(time.Until(c.readDeadline()))
		return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
	}
	if c.reads%c.every == 0 {
		time.Sleep(c.stall)
		if !time.Now().Before(c.readDeadline()) {
			c.timedOut = true
			return 0, netip.AddrPort{}, os.ErrDeadlineExceeded
		}
	}
	return c.Conn.ReadFrom(b)
}

// TestStarvedServer: a lock-step transfer from a server that stalls
// 60 ms on every eighth read, longer than the absolute RTO floor. The
// floor learns the stall from the round trips it inflates, and a timer
// that fires with the answer waiting takes the answer instead of
// resending: at most one timeout, no retransmission, the client sees no
// duplicate. When the look after the timeout misses too, the resend is
// counted as spurious (the answer came sooner than any round trip).
func TestStarvedServer(t *testing.T) {
	for _, hide := range []bool{false, true} {
		name := map[bool]string{false: "look finds the answer", true: "look misses it"}[hide]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, dups := starvedTransfer(t, hide)
				if hide {
					if c.Spurious.Load() == 0 || c.Spurious.Load() != c.Retransmits.Load() {
						t.Errorf("spurious %d, retransmits %d: want every (one or two) resend counted spurious", c.Spurious.Load(), c.Retransmits.Load())
					}
					if c.Timeouts.Load() > 2 {
						t.Errorf("timeouts %d: the floor did not learn the stall", c.Timeouts.Load())
					}
					return
				}
				if c.Retransmits.Load() != 0 || dups != 0 || c.LateAnswers.Load() == 0 || c.Timeouts.Load() > 1 {
					t.Errorf("retransmits %d, client duplicates %d, late answers %d, timeouts %d: want 0, 0, >0, <=1",
						c.Retransmits.Load(), dups, c.LateAnswers.Load(), c.Timeouts.Load())
				}
			})
		})
	}
}

// starvedTransfer serves 200 blocks lock-step from a starvedConn to a
// client that ACKs each new block at once, and returns the server's
// counters and how many duplicate blocks the client saw.
func starvedTransfer(t *testing.T, hideLook bool) (*Counters, int) {
	n := memnet.New(1)
	n.Latency = time.Millisecond / 10
	data := testData(200*512-1, 3)
	var counters Counters
	srv := n.Listen("192.0.2.1")
	cl := n.Listen("192.0.2.10")
	sc := &starvedConn{Conn: srv, every: 8, stall: 60 * time.Millisecond, hideLook: hideLook}
	rs := &readSession{c: sc, peer: cl.Addr(), src: &mappedSource{data: data, blksize: 512},
		size: int64(len(data)), neg: Negotiated{BlockSize: 512, WindowSize: 1}, counters: &counters,
		timing: timing{InitialRTO: time.Second, MinRTO: 20 * time.Millisecond, MaxRTO: 8 * time.Second, Retries: 6, Lifetime: time.Hour}}
	out := make(chan result, 1)
	go func() { out <- rs.run(context.Background()) }()
	var got bytes.Buffer
	buf := make([]byte, 600)
	dups := 0
	for next := uint16(1); ; {
		cl.SetReadDeadline(time.Now().Add(time.Minute))
		k, from, err := cl.ReadFrom(buf)
		if err != nil {
			t.Fatalf("client: %v after %d blocks", err, next-1)
		}
		b, p, err := ParseData(buf[:k])
		if err != nil {
			t.Fatalf("not DATA: %v", err)
		}
		if b != next {
			dups++
			continue
		}
		got.Write(p)
		cl.WriteTo(AppendAck(nil, b), from)
		next++
		if len(p) < 512 {
			break
		}
	}
	if res := <-out; res.Outcome != OutcomeOK || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("outcome %s (%v), %d bytes of %d", res.Outcome, res.Err, got.Len(), len(data))
	}
	return &counters, dups
}

// starvedLoopConn is an event loop's socket on a starved server: its
// first read of a batch is starvedConn's, the rest of the batch takes
// what is queued without waiting (as recvmmsg does).
type starvedLoopConn struct{ *starvedConn }

func (m starvedLoopConn) ReadBatch(bufs [][]byte, out []udpio.Packet) (int, error) {
	n, from, err := m.starvedConn.ReadFrom(bufs[0])
	if err != nil {
		return 0, err
	}
	out[0] = udpio.Packet{Data: bufs[0][:n], Src: from}
	k := 1
	for ; k < len(bufs) && k < len(out); k++ {
		// A deadline just ahead: in virtual time it passes only once
		// every goroutine waits, so this takes only what is queued.
		m.Conn.SetReadDeadline(time.Now().Add(time.Nanosecond))
		n, from, err := m.Conn.ReadFrom(bufs[k])
		if err != nil {
			break
		}
		out[k] = udpio.Packet{Data: bufs[k][:n], Src: from}
	}
	m.Conn.SetReadDeadline(m.readDeadline())
	return k, nil
}

func (m starvedLoopConn) WriteMessages(ms []udpio.Message) (int, int, error) {
	return memLoopConn{m.Conn}.WriteMessages(ms)
}

// TestLoopStarved: one event loop that stalls 60 ms on every fourth read
// serves 30 lock-step clients at once. It reads the answers that waited
// through a stall before it runs its timers, and the floor learns the
// stall: every transfer ends ok with at most a few retransmissions in all.
func TestLoopStarved(t *testing.T) {
	root, files := loopFiles(t)
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(7)
		n.Latency = time.Millisecond / 10
		srv := &Server{Files: store, SinglePort: true, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
		addr := netip.MustParseAddrPort("192.0.2.1:69")
		sc := &starvedConn{Conn: n.Bind(addr), every: 4, stall: 60 * time.Millisecond}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.runLoops(ctx, nil, []loopConn{starvedLoopConn{sc}}) }()
		const clients = 30
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				cl := n.Listen(fmt.Sprintf("192.0.2.%d", 10+i))
				defer cl.Close()
				var got bytes.Buffer
				c := &Client{BlockSize: 1468}
				if _, err := c.get(context.Background(), cl, addr, "f7", &got, time.Now()); err != nil || !bytes.Equal(got.Bytes(), files["f7"]) {
					t.Errorf("client %d: %v (%d bytes)", i, err, got.Len())
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Minute)
		c := &srv.Counters
		t.Logf("retransmits %d, spurious %d, timeouts %d, late answers %d", c.Retransmits.Load(), c.Spurious.Load(), c.Timeouts.Load(), c.LateAnswers.Load())
		if c.Completed.Load() != clients || c.Retransmits.Load() > clients/3 {
			t.Errorf("%d of %d transfers completed, %d blocks resent: want all, at most %d", c.Completed.Load(), clients, c.Retransmits.Load(), clients/3)
		}
		cancel()
		<-done
	})
}
