package tftp

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
)

// serveOne plays the server's listener for one request over the memnet:
// it reads the RRQ, negotiates and runs the read session from a new TID.
func serveOne(t *testing.T, n *memnet.Net, ln *memnet.Conn, data []byte, lim Limits, counters *Counters) <-chan result {
	t.Helper()
	out := make(chan result, 1)
	go func() {
		buf := make([]byte, 600)
		ln.SetReadDeadline(time.Now().Add(time.Minute))
		k, peer, err := ln.ReadFrom(buf)
		if err != nil {
			out <- result{Outcome: OutcomeError, Err: err}
			return
		}
		req, err := ParseRequest(buf[:k])
		if err != nil {
			out <- result{Outcome: OutcomeError, Err: err}
			return
		}
		neg := Negotiate(req, lim, int64(len(data)))
		var oack []byte
		if len(neg.Ack) > 0 {
			oack = AppendOACK(nil, neg.Ack)
		}
		c := n.Listen("192.0.2.1")
		defer c.Close()
		rs := &readSession{c: c, peer: peer, src: &mappedSource{data: data, blksize: neg.BlockSize},
			size: int64(len(data)), neg: neg, oack: oack, counters: counters,
			timing: timing{InitialRTO: time.Second, MinRTO: 50 * time.Millisecond, MaxRTO: 8 * time.Second, Retries: 6, Lifetime: time.Hour}}
		out <- rs.run(context.Background())
	}()
	return out
}

func testData(size int, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestTransferImpaired runs the real client against the real read session
// over an impaired in-memory network in virtual time: every combination
// must deliver the exact bytes, and duplicates must not multiply sends
// (Sorcerer's Apprentice).
func TestTransferImpaired(t *testing.T) {
	type impair struct {
		name               string
		loss, dup, reorder float64
	}
	impairs := []impair{
		{"clean", 0, 0, 0},
		{"loss5", 0.05, 0, 0},
		{"loss20", 0.20, 0, 0},
		{"dup10", 0, 0.10, 0},
		{"reorder10", 0, 0, 0.10},
		{"mixed", 0.05, 0.05, 0.05},
	}
	sizes := []int{0, 1, 511, 512, 513, 4 * 1468, 100_003}
	for _, im := range impairs {
		for _, bs := range []int{512, 1468} {
			for _, win := range []int{1, 4, 16} {
				for _, size := range sizes {
					name := fmt.Sprintf("%s/bs%d/w%d/%d", im.name, bs, win, size)
					t.Run(name, func(t *testing.T) {
						synctest.Test(t, func(t *testing.T) {
							n := memnet.New(uint64(size*31 + bs + win))
							n.Loss, n.Dup, n.Reorder = im.loss, im.dup, im.reorder
							data := testData(size, uint64(size))
							var counters Counters
							ln := n.Listen("192.0.2.1")
							srv := serveOne(t, n, ln, data, Limits{MaxBlockSize: 65464, MaxWindow: 64}, &counters)
							cl := n.Listen("192.0.2.10")
							c := &Client{BlockSize: bs, WindowSize: win, TSize: true, Retries: 12}
							var got bytes.Buffer
							res, err := c.get(context.Background(), cl, ln.Addr(), "f", &got, time.Now())
							if err != nil {
								t.Fatalf("client: %v", err)
							}
							if !bytes.Equal(got.Bytes(), data) {
								t.Fatalf("got %d bytes, want %d (content differs)", got.Len(), len(data))
							}
							if res.TSize != int64(size) || res.BlockSize != bs || res.WindowSize != win {
								t.Fatalf("negotiated tsize %d blksize %d window %d", res.TSize, res.BlockSize, res.WindowSize)
							}
							sr := <-srv
							if sr.Outcome != OutcomeOK && sr.Outcome != OutcomeUnconfirmed {
								t.Fatalf("server outcome %s: %v", sr.Outcome, sr.Err)
							}
							if im.loss == 0 && im.dup == 0 && im.reorder == 0 && sr.Outcome != OutcomeOK {
								t.Fatalf("clean network: outcome %s", sr.Outcome)
							}
							if im.name == "clean" && (res.Duplicates != 0 || res.OutOfOrder != 0) {
								t.Fatalf("clean network: client saw %d duplicate and %d out-of-order blocks", res.Duplicates, res.OutOfOrder)
							}
							if size == 100_003 && win == 16 {
								// The client reports what it saw (mtftpd bench's
								// "retransmits seen"): enough blocks here that the
								// seeded impairment always hits some.
								if im.name == "dup10" && res.Duplicates == 0 {
									t.Fatal("dup10: client counted no duplicate blocks")
								}
								if im.name == "reorder10" && res.OutOfOrder == 0 {
									t.Fatal("reorder10: client counted no out-of-order blocks")
								}
							}
							blocks := BlockCount(int64(size), bs)
							sent := counters.DataSent.Load()
							if im.loss == 0 {
								// Duplicated or reordered ACKs and DATA alone
								// must not make the server send more than each
								// block once (plus a window per rare timer):
								// the client holds blocks ahead of a gap until
								// the reordered one arrives.
								if sent > blocks+uint64(win) {
									t.Fatalf("sent %d datagrams for %d blocks with dup %.2f reorder %.2f: resends without loss",
										sent, blocks, im.dup, im.reorder)
								}
							}
						})
					})
				}
			}
		}
	}
}

// TestRollover moves a file of more than 65535 blocks (blksize 8 keeps it
// small) with rollover 0 (the default iPXE/EDK2/PXELINUX expect) and 1.
func TestRollover(t *testing.T) {
	for _, ro := range []string{"", "0", "1"} {
		t.Run("rollover="+ro, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(7)
				n.Loss = 0.01
				data := testData(70_001*8+3, 3)
				var counters Counters
				ln := n.Listen("192.0.2.1")
				srv := serveOne(t, n, ln, data, Limits{MaxWindow: 64}, &counters)
				cl := n.Listen("192.0.2.10")
				c := &Client{BlockSize: 8, WindowSize: 32, Retries: 12}
				var got bytes.Buffer
				// The client asks for rollover by a raw option: add it to
				// the request through a wrapper conn that rewrites the RRQ.
				var cc conn = cl
				if ro != "" {
					cc = &rrqRewriter{Conn: cl, extra: []Option{{OptRollover, ro}}}
				}
				if _, err := c.get(context.Background(), cc, ln.Addr(), "f", &got, time.Now()); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), data) {
					t.Fatalf("content differs: %d vs %d bytes", got.Len(), len(data))
				}
				if r := <-srv; r.Outcome != OutcomeOK && r.Outcome != OutcomeUnconfirmed {
					t.Fatalf("server: %s %v", r.Outcome, r.Err)
				}
			})
		})
	}
}

// rrqRewriter appends options to the first RRQ the client sends.
type rrqRewriter struct {
	*memnet.Conn
	extra []Option
	done  bool
}

func (r *rrqRewriter) WriteTo(b []byte, dst netip.AddrPort) error {
	if !r.done && PacketOpcode(b) == OpRRQ {
		r.done = true
		req, err := ParseRequest(b)
		if err == nil {
			req.Options = append(req.Options, r.extra...)
			b = req.Marshal(nil)
		}
	}
	return r.Conn.WriteTo(b, dst)
}

// TestSizeProbe: an ERROR 8 right after the OACK (UEFI's tsize probe) is a
// probe, not a failure.
func TestSizeProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		var counters Counters
		ln := n.Listen("192.0.2.1")
		srv := serveOne(t, n, ln, testData(5000, 1), Limits{MaxWindow: 64}, &counters)
		cl := n.Listen("192.0.2.10")
		rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{{"tsize", "0"}, {"blksize", "1468"}}}).Marshal(nil)
		cl.WriteTo(rrq, ln.Addr())
		buf := make([]byte, 2048)
		k, from, err := cl.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := ParseOACK(buf[:k])
		if err != nil {
			t.Fatalf("want OACK: %v", err)
		}
		if v := findOpt(opts, "tsize"); v != "5000" {
			t.Fatalf("tsize %q", v)
		}
		cl.WriteTo(AppendError(nil, ErrCodeOptionRefuse, "User aborted the transfer"), from)
		if r := <-srv; r.Outcome != OutcomeProbe {
			t.Fatalf("outcome %s, want probe", r.Outcome)
		}
	})
}

// TestClientProbeSize: Client.ProbeSize sends the options plus tsize,
// takes the size from the OACK and aborts with ERROR 8, which the server
// records as a probe (UEFI firmware's first request); the same client then
// downloads for real.
func TestClientProbeSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(2)
		var counters Counters
		ln := n.Listen("192.0.2.1")
		data := testData(5000, 2)
		srv := serveOne(t, n, ln, data, Limits{MaxBlockSize: 65464, MaxWindow: 64}, &counters)
		cl := n.Listen("192.0.2.10")
		c := &Client{BlockSize: 1468, WindowSize: 4}
		size, err := c.probe(context.Background(), cl, ln.Addr(), "f")
		if err != nil || size != 5000 {
			t.Fatalf("probe: size %d, %v; want 5000", size, err)
		}
		if r := <-srv; r.Outcome != OutcomeProbe {
			t.Fatalf("outcome %s, want probe", r.Outcome)
		}
		srv = serveOne(t, n, ln, data, Limits{MaxBlockSize: 65464, MaxWindow: 64}, &counters)
		var got bytes.Buffer
		res, err := c.get(context.Background(), cl, ln.Addr(), "f", &got, time.Now())
		if err != nil || !bytes.Equal(got.Bytes(), data) || res.WindowSize != 4 || res.TSize != -1 {
			t.Fatalf("get after probe: %v, %d bytes, window %d, tsize %d", err, got.Len(), res.WindowSize, res.TSize)
		}
		if r := <-srv; r.Outcome != OutcomeOK {
			t.Fatalf("outcome %s, want ok", r.Outcome)
		}
	})
}

func findOpt(opts []Option, name string) string {
	for _, o := range opts {
		if o.Name == name {
			return o.Value
		}
	}
	return ""
}

// TestGapAckResendsOnce drives the server by hand: a window of 4, an ACK
// inside it rewinds to the block after it, and repeating that ACK does not
// cause another window (RFC 7440 §3.4, window-level Sorcerer's Apprentice).
func TestGapAckResendsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		n.Latency = time.Millisecond
		var counters Counters
		ln := n.Listen("192.0.2.1")
		srv := serveOne(t, n, ln, testData(20000, 2), Limits{MaxWindow: 64}, &counters)
		cl := n.Listen("192.0.2.10")
		rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{{"blksize", "1428"}, {"windowsize", "4"}}}).Marshal(nil)
		cl.WriteTo(rrq, ln.Addr())
		buf := make([]byte, 2048)
		cl.SetReadDeadline(time.Now().Add(time.Hour))
		_, from, _ := cl.ReadFrom(buf) // OACK
		recv := func() []uint16 {
			var got []uint16
			for {
				cl.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				k, _, err := cl.ReadFrom(buf)
				if err != nil {
					return got
				}
				b, _, err := ParseData(buf[:k])
				if err != nil {
					t.Fatalf("not DATA: %v", err)
				}
				got = append(got, b)
			}
		}
		cl.WriteTo(AppendAck(nil, 0), from)
		if got := recv(); fmt.Sprint(got) != "[1 2 3 4]" {
			t.Fatalf("first window %v", got)
		}
		cl.WriteTo(AppendAck(nil, 4), from)
		if got := recv(); fmt.Sprint(got) != "[5 6 7 8]" {
			t.Fatalf("second window %v", got)
		}
		// Pretend 7 was lost: ACK 6 three times.
		for range 3 {
			cl.WriteTo(AppendAck(nil, 6), from)
		}
		if got := recv(); fmt.Sprint(got) != "[7 8 9 10]" {
			t.Fatalf("after gap ACK: %v (want exactly one window from 7)", got)
		}
		if d := counters.DupAck.Load(); d != 2 {
			t.Fatalf("dup ACKs counted %d, want 2", d)
		}
		cl.WriteTo(AppendError(nil, 0, "bye"), from)
		<-srv
	})
}

// TestGiveUpRules: a request whose source never answers (spoofed) is
// dropped after a few retries and is not counted as delivered; a client
// that was heard gets at least StallTimeout of silence before it is
// dropped, and a transfer that stops short is a timeout, not a success.
func TestGiveUpRules(t *testing.T) {
	run := func(t *testing.T, size int, acks int) (result, time.Duration) {
		n := memnet.New(1)
		var counters Counters
		ln := n.Listen("192.0.2.1")
		data := testData(size, 9)
		out := make(chan result, 1)
		cl := n.Listen("192.0.2.10")
		go func() {
			c := n.Listen("192.0.2.1")
			defer c.Close()
			rs := &readSession{c: c, peer: cl.Addr(), src: &mappedSource{data: data, blksize: 512},
				size: int64(size), neg: Negotiated{BlockSize: 512, WindowSize: 1}, counters: &counters,
				timing: timing{InitialRTO: time.Second, MinRTO: 50 * time.Millisecond, MaxRTO: 8 * time.Second,
					Retries: 6, StallTimeout: 30 * time.Second, Lifetime: time.Hour}}
			out <- rs.run(context.Background())
		}()
		_ = ln
		start := time.Now()
		buf := make([]byte, 1024)
		for i := 0; i < acks; i++ {
			cl.SetReadDeadline(time.Now().Add(time.Minute))
			k, from, err := cl.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			b, _, _ := ParseData(buf[:k])
			cl.WriteTo(AppendAck(nil, b), from)
		}
		r := <-out
		return r, time.Since(start)
	}
	synctest.Test(t, func(t *testing.T) {
		r, d := run(t, 300, 0) // one block, never ACKed
		if r.Outcome != OutcomeTimeout || d > 30*time.Second {
			t.Fatalf("unanswered 1-block request: %s after %v", r.Outcome, d)
		}
		r, d = run(t, 5000, 3) // ACKs 3 of 10 blocks, then silence
		if r.Outcome != OutcomeTimeout || r.Bytes != 3*512 {
			t.Fatalf("stalled client: %s, %d bytes", r.Outcome, r.Bytes)
		}
		if d < 30*time.Second {
			t.Fatalf("stalled client dropped after %v, before the 30 s stall timeout", d)
		}
		r, _ = run(t, 5000, 9) // everything but the final ACK
		if r.Outcome != OutcomeUnconfirmed {
			t.Fatalf("missing final ACK only: %s", r.Outcome)
		}
	})
}

// TestLifetimeCap: a transfer that is still moving when its lifetime ends
// is stopped with an ERROR packet (session_lifetime).
func TestLifetimeCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		var counters Counters
		cl := n.Listen("192.0.2.10")
		out := make(chan result, 1)
		go func() {
			c := n.Listen("192.0.2.1")
			defer c.Close()
			rs := &readSession{c: c, peer: cl.Addr(), src: &mappedSource{data: testData(100_000, 1), blksize: 512},
				size: 100_000, neg: Negotiated{BlockSize: 512, WindowSize: 1}, counters: &counters,
				timing: timing{InitialRTO: time.Second, MinRTO: 50 * time.Millisecond, MaxRTO: 8 * time.Second,
					Retries: 6, StallTimeout: 30 * time.Second, Lifetime: 10 * time.Second}}
			out <- rs.run(context.Background())
		}()
		// A slow client: one ACK per second, 196 blocks to go.
		buf := make([]byte, 1024)
		var sawError bool
		for i := 0; i < 40; i++ {
			cl.SetReadDeadline(time.Now().Add(time.Minute))
			k, from, err := cl.ReadFrom(buf)
			if err != nil {
				break
			}
			if PacketOpcode(buf[:k]) == OpERROR {
				sawError = true
				break
			}
			b, _, _ := ParseData(buf[:k])
			time.Sleep(time.Second)
			cl.WriteTo(AppendAck(nil, b), from)
		}
		r := <-out
		if r.Outcome != OutcomeLifetime || !sawError {
			t.Fatalf("outcome %s, ERROR seen %v; want lifetime with an ERROR", r.Outcome, sawError)
		}
	})
}

// TestConfirmTimeout: a request whose client never answers (a spoofed
// source) holds its unconfirmed slot for ConfirmTimeout at most, sending
// nothing but copies of its first reply meanwhile, for reads and writes;
// before, a read held it for 1+2+4+8+8 = 23 s of retries (finding 5).
func TestConfirmTimeout(t *testing.T) {
	tm := timing{InitialRTO: time.Second, MinRTO: 50 * time.Millisecond, MaxRTO: 8 * time.Second,
		Retries: 6, StallTimeout: 30 * time.Second, Lifetime: time.Hour, ConfirmTimeout: 5 * time.Second}
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(2)
		cl := n.Listen("192.0.2.10")
		c := n.Listen("192.0.2.1")
		start := time.Now()
		rs := &readSession{c: c, peer: cl.Addr(), src: &mappedSource{data: testData(5000, 1), blksize: 512},
			size: 5000, neg: Negotiated{BlockSize: 512, WindowSize: 1}, counters: &Counters{}, timing: tm}
		r := rs.run(context.Background())
		if d := time.Since(start); r.Outcome != OutcomeTimeout || d > tm.ConfirmTimeout {
			t.Fatalf("read never answered: %s after %v, want timeout within %v", r.Outcome, d, tm.ConfirmTimeout)
		}
		c.Close()
		c = n.Listen("192.0.2.1")
		start = time.Now()
		ws := &writeSession{c: c, peer: cl.Addr(), neg: Negotiated{BlockSize: 512, WindowSize: 1}, counters: &Counters{},
			timing: tm, open: func() (upload, error) { t.Error("upload opened without DATA"); return nopUpload{}, nil }}
		w := ws.run(context.Background())
		if d := time.Since(start); w.Outcome != OutcomeTimeout || d > tm.ConfirmTimeout {
			t.Fatalf("write never answered: %s after %v, want timeout within %v", w.Outcome, d, tm.ConfirmTimeout)
		}
		c.Close()
		cl.Close()
	})
}

// nopUpload takes a write session's bytes and drops them.
type nopUpload struct{}

func (nopUpload) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (nopUpload) Commit() error                          { return nil }
func (nopUpload) Abort()                                 {}

// TestClientAnswersRepeatedOACK: a server that repeats its OACK did not
// get ACK 0; the client answers the repeat at once instead of waiting for
// its own timer (a server session with a short stall timeout gives up
// first). In virtual time the fake server waits 5 ms for that answer,
// less than the client's shortest timer (20 ms), so only an answer to the
// repeat can finish the transfer.
func TestClientAnswersRepeatedOACK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		n.Latency = time.Millisecond
		ln := n.Listen("192.0.2.1")
		srvErr := make(chan error, 1)
		go func() {
			buf := make([]byte, 2048)
			ln.SetReadDeadline(time.Now().Add(time.Second))
			_, peer, err := ln.ReadFrom(buf)
			if err != nil {
				srvErr <- err
				return
			}
			c := n.Listen("192.0.2.1")
			defer c.Close()
			oack := AppendOACK(nil, []Option{{"blksize", "512"}})
			expect := func(what string, block uint16, within time.Duration) error {
				c.SetReadDeadline(time.Now().Add(within))
				k, _, err := c.ReadFrom(buf)
				if err != nil {
					return fmt.Errorf("waiting for %s: %w", what, err)
				}
				if got, err := ParseAck(buf[:k]); err != nil || got != block {
					return fmt.Errorf("%s: got ACK %d (%v)", what, got, err)
				}
				return nil
			}
			c.WriteTo(oack, peer)
			if err := expect("ACK 0", 0, time.Second); err != nil { // "lost": not answered
				srvErr <- err
				return
			}
			c.WriteTo(oack, peer)
			if err := expect("ACK 0 after the repeated OACK", 0, 5*time.Millisecond); err != nil {
				srvErr <- err
				return
			}
			data := append(make([]byte, HeaderLen), "hello"...)
			PutDataHeader(data, 1)
			c.WriteTo(data, peer)
			srvErr <- expect("ACK 1", 1, time.Second)
		}()
		cl := n.Listen("192.0.2.10")
		c := &Client{BlockSize: 512, Retries: 0, Timeout: time.Minute}
		var got bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.get(ctx, cl, ln.Addr(), "f", &got, time.Now()); err != nil {
			t.Errorf("client: %v", err)
		}
		if err := <-srvErr; err != nil {
			t.Fatalf("server: %v", err)
		}
		if got.String() != "hello" {
			t.Fatalf("got %q", got.String())
		}
	})
}
