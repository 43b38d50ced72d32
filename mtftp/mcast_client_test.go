package mtftp

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/tftp"
)

// memSockets gives a receiver at ip its sockets on the in-memory network.
func memSockets(n *memnet.Net, ip string) (dialFunc, joinFunc) {
	dial := func(netip.AddrPort) (conn, netip.Addr, error) {
		return n.Listen(ip), netip.MustParseAddr(ip), nil
	}
	join := func(g netip.AddrPort, _ netip.Addr) (conn, error) { return n.Join(ip, g), nil }
	return dial, join
}

// serveTFTPPort plays the tftp server's part for RFC 2090 on n: RRQs to
// srvIP:69 go to ServeMulticast, one at a time per client socket (the
// tftp server's reserve), until ctx ends.
func serveTFTPPort(ctx context.Context, t *testing.T, n *memnet.Net, s *Server) {
	c := n.Bind(netip.MustParseAddrPort(srvIP + ":69"))
	context.AfterFunc(ctx, func() { c.Close() })
	var mu sync.Mutex
	busy := map[netip.AddrPort]bool{}
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := tftp.ParseRequest(buf[:k])
			if err != nil {
				continue
			}
			mu.Lock()
			if busy[from] {
				mu.Unlock()
				continue
			}
			busy[from] = true
			mu.Unlock()
			go func() {
				if !s.ServeMulticast(ctx, req, from, netip.MustParseAddr(srvIP)) {
					t.Errorf("%v: request not served by multicast", from)
				}
				mu.Lock()
				delete(busy, from)
				mu.Unlock()
			}()
		}
	}()
}

// getAll runs one download per receiver, receiver i at ip 192.0.2.(101+i)
// after delays[i], and checks every output file against want.
func getAll(t *testing.T, receivers int, delays func(i int) time.Duration, want []byte,
	get func(i int, ip string, out *os.File) (ReceiveResult, error)) []ReceiveResult {
	t.Helper()
	dir := t.TempDir()
	res := make([]ReceiveResult, receivers)
	errs := make([]error, receivers)
	var wg sync.WaitGroup
	for i := range receivers {
		wg.Go(func() {
			time.Sleep(delays(i))
			out, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer out.Close()
			res[i], errs[i] = get(i, fmt.Sprintf("192.0.2.%d", 101+i), out)
		})
	}
	wg.Wait()
	for i := range receivers {
		got, _ := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if errs[i] != nil || !bytes.Equal(got, want) || res[i].Size != int64(len(want)) {
			t.Errorf("receiver %d: %d bytes (size %d), err %v", i, len(got), res[i].Size, errs[i])
		}
	}
	return res
}

// rfc2090Swarm runs eight RFC2090Receivers of data from s over n, receiver
// i starting 20i ms after the first, so that each misses the start of the
// stream (about ten blocks more than the one before it); it checks every
// output, then that the sessions end, and returns the receivers' results.
func rfc2090Swarm(t *testing.T, n *memnet.Net, s *Server, data []byte) []ReceiveResult {
	t.Helper()
	// A minute of virtual time (a swarm takes about two seconds) bounds a
	// server that never goes silent: the receivers' own timeout is for
	// silence, and the session's lifetime is an hour.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	serveTFTPPort(ctx, t, n, s)
	res := getAll(t, 8, func(i int) time.Duration { return time.Duration(i) * 20 * time.Millisecond }, data,
		func(i int, ip string, out *os.File) (ReceiveResult, error) {
			r := &RFC2090Receiver{}
			r.dial, r.join = memSockets(n, ip)
			return r.Get(ctx, srvIP, "f", out)
		})
	time.Sleep(time.Minute)
	synctest.Wait()
	checkIdle(t, s)
	return res
}

// TestRFC2090Receiver: eight staggered receivers, with and without 5 %
// loss, all get the file from mtftpd's RFC 2090 sessions (rfc2090Swarm);
// masters rotate: a master that is done leaves and the next is promoted,
// and promoted late joiners ask for the blocks they missed; the DATA sent
// stays near one copy of the file plus those repairs. How many receivers
// become master is the schedule's: one whose gaps an earlier master's
// repairs filled completes passively (docs/protocols.md §6.2), so under
// loss it is not asserted (it failed 19 of 60 runs when it was; most of
// those had lost a passive OACK, see TestRFC2090LostOACK).
func TestRFC2090Receiver(t *testing.T) {
	for _, loss := range []float64{0, 0.05} {
		t.Run(fmt.Sprint("loss", loss), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(22)
				// The loss is drawn here (as memnet would: per datagram
				// and receiving endpoint) to count the lost RRQs and
				// OACKs: each delays a join, by a second (the client's
				// retry) or an RTO (the server's), and a receiver that
				// joins that late has missed up to the whole stream.
				rng := rand.New(rand.NewPCG(22, 0))
				var lostJoins uint64
				n.Drop = func(_, _ netip.AddrPort, b []byte) bool {
					if rng.Float64() >= loss {
						return false
					}
					if op := tftp.PacketOpcode(b); op == tftp.OpRRQ || op == tftp.OpOACK {
						lostJoins++
					}
					return true
				}
				data := testData(200_000, 21)
				s := newTestServer(t, n, map[string][]byte{"f": data})
				res := rfc2090Swarm(t, n, s, data)
				var masters int
				var asked int64
				for _, r := range res {
					masters += r.Masters
					asked += r.Requests
				}
				blocks := uint64(len(data)/DefaultRFC2090BlockSize + 1)
				sent := s.Counters.DataSent.Load()
				t.Logf("blocks %d, DATA sent %d, sessions %d, masters %d, promotions %d, gaps asked %d, RRQs and OACKs lost %d",
					blocks, sent, s.Counters.Sessions.Load(), masters, s.Counters.Promotions.Load(), asked, lostJoins)
				if s.Counters.Promotions.Load() == 0 || masters < 2 || asked == 0 {
					t.Errorf("masters %d, promotions %d, gaps asked %d: masters did not rotate, or late joiners did not ask for their gaps",
						masters, s.Counters.Promotions.Load(), asked)
				}
				// The stream once, each receiver's missed start once (the
				// last missed about half) and the repairs of losses; then
				// one more copy at most for each join a loss delayed
				// (repairs for it, or a session of its own once the first
				// is over).
				if limit := (2 + lostJoins) * blocks; sent > limit {
					t.Errorf("DATA sent %d for %d blocks, %d joins delayed: over %d, not one stream", sent, blocks, lostJoins, limit)
				}
				// Without loss: each receiver lacks blocks that only it
				// and later ones miss, so each is master once, and each
				// leaves by its ACK of the last block.
				if c, d := s.Counters.Completed.Load(), s.Counters.Dropped.Load(); loss == 0 && (masters != 8 || c != 8 || d != 0) {
					t.Errorf("no loss: masters %d, completed %d, dropped %d; want 8, 8, 0", masters, c, d)
				}
			})
		})
	}
}

// TestRFC2090LostOACK: the OACK (mc=0) to the fourth receiver, a passive
// member, is lost. A passive client never answers its OACK and its repeated
// RRQ is a duplicate the TFTP port drops, so with that single OACK it
// stayed out of the group until promoted and then had every block sent
// again for it (DATA sent 302 for 141 blocks). The passive OACK goes out
// again one RTO later (docs/protocols.md §6.4): one stream plus the missed
// starts (211). It joins about 25 blocks late, and its repairs then fill
// the gaps of the next two, which complete without being master: masters
// are not counted (TestRFC2090Receiver).
func TestRFC2090LostOACK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(22)
		fourth := netip.MustParseAddr("192.0.2.104")
		lost := false
		n.Drop = func(_, to netip.AddrPort, b []byte) bool {
			if tftp.PacketOpcode(b) == tftp.OpOACK && to.Addr() == fourth && !lost {
				lost = true
				return true
			}
			return false
		}
		data := testData(200_000, 21)
		s := newTestServer(t, n, map[string][]byte{"f": data})
		rfc2090Swarm(t, n, s, data)
		blocks := uint64(len(data)/DefaultRFC2090BlockSize + 1)
		if sent := s.Counters.DataSent.Load(); !lost || sent > 2*blocks {
			t.Errorf("OACK lost %v: DATA sent %d for %d blocks; want at most %d, one stream", lost, sent, blocks, 2*blocks)
		}
	})
}

// TestPXEReceiver: eight receivers, started together, with and without
// 5 % loss, all get the file from mtftpd's PXE MTFTP listener: one opens,
// the others listen, and whoever has gaps re-opens after the pass.
func TestPXEReceiver(t *testing.T) {
	for _, loss := range []float64{0, 0.05} {
		t.Run(fmt.Sprint("loss", loss), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := memnet.New(22)
				n.Loss = loss
				data := testData(150_000, 22)
				s, stop := newPXETestServer(t, n, map[string][]byte{"f": data})
				defer stop()
				res := getAll(t, 8, func(int) time.Duration { return 0 }, data,
					func(i int, ip string, out *os.File) (ReceiveResult, error) {
						r := &PXEReceiver{ListenDelay: time.Second, Delay: time.Second}
						r.dial, r.join = memSockets(n, ip)
						return r.Get(context.Background(), pxeListen, "f", out)
					})
				var acked int
				for _, r := range res {
					acked += r.Masters
				}
				t.Logf("passes %d, acknowledged %d, DATA sent %d, repairs %d", s.Counters.Passes.Load(), acked, s.Counters.DataSent.Load(), s.Counters.Repairs.Load())
				if loss == 0 && (s.Counters.Passes.Load() != 1 || acked != 1) {
					t.Errorf("no loss: %d passes, %d acknowledged, want one pass for all", s.Counters.Passes.Load(), acked)
				}
				settle()
			})
		})
	}
}

// TestPXEReceiverAcksRepeats: the acknowledging client's ACK of block 40
// is lost; the server sends block 40 again and the receiver, as the spec
// says, ACKs a block it already holds: the pass goes on, one pass in all.
func TestPXEReceiverAcksRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(23)
		dropped := false
		n.Drop = func(from, to netip.AddrPort, b []byte) bool {
			if ack, err := tftp.ParseAck(b); err == nil && tftp.PacketOpcode(b) == tftp.OpACK && ack == 40 && !dropped {
				dropped = true
				return true
			}
			return false
		}
		data := testData(60_000, 23)
		s, stop := newPXETestServer(t, n, map[string][]byte{"f": data})
		defer stop()
		res := getAll(t, 1, func(int) time.Duration { return 0 }, data, func(i int, ip string, out *os.File) (ReceiveResult, error) {
			r := &PXEReceiver{ListenDelay: time.Second, Delay: time.Second}
			r.dial, r.join = memSockets(n, ip)
			return r.Get(context.Background(), pxeListen, "f", out)
		})
		if !dropped || s.Counters.Passes.Load() != 1 || s.Counters.Repairs.Load() == 0 || res[0].Duplicates == 0 {
			t.Errorf("dropped %v, passes %d, repairs %d, duplicates %d: want one pass with block 40 sent again",
				dropped, s.Counters.Passes.Load(), s.Counters.Repairs.Load(), res[0].Duplicates)
		}
		settle()
	})
}

// TestPXESilentRequesterHandedOver: a pass whose requester never ACKs
// DATA 1 must not hold the group. Receiver 0 opens the first pass; receiver
// 1 misses only block 1 of it, receiver 2 only block 100. After that pass
// both re-open; receiver 2's RRQ is lost, so receiver 1 gets the second
// pass, and its DATA 1 completes its file: it leaves without an ACK (as a
// ROM whose RRQ crossed the end of a pass, or one switched off, does). The
// server re-sends DATA 1 and 2 for up to five timeouts (15 s from a 1 s
// RTO) and, by rule 5, ignored receiver 2's RRQs meanwhile, so receiver 2
// spent its opens hearing a pass stuck at block 2: 11 of its 16 here, all
// 16 with a DELAY of 1 s (1 in 30 runs of TestPXEReceiver/loss0.05). The
// server must hand the silent pass to the live requester
// (docs/protocols.md §7.4, rule 5): two passes, everyone completes. DELAY
// is 1.5 s so that no receiver timer falls on the server's (1 s, 2 s, …)
// in virtual time.
func TestPXESilentRequesterHandedOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(26)
		x, y := netip.MustParseAddr("192.0.2.102"), netip.MustParseAddr("192.0.2.103")
		var lostData1, lostData100, lostRRQ bool
		n.Drop = func(from, to netip.AddrPort, b []byte) bool {
			switch op := tftp.PacketOpcode(b); {
			case op == tftp.OpDATA && to.Port() == DefaultPXEClientPort:
				blk, _, _ := tftp.ParseData(b)
				if to.Addr() == x && blk == 1 && !lostData1 {
					lostData1 = true
					return true
				}
				if to.Addr() == y && blk == 100 && !lostData100 {
					lostData100 = true
					return true
				}
			case op == tftp.OpRRQ && from.Addr() == y && !lostRRQ:
				lostRRQ = true
				return true
			}
			return false
		}
		data := testData(60_000, 26) // 118 blocks
		s, stop := newPXETestServer(t, n, map[string][]byte{"f": data})
		defer stop()
		// Receiver 0 opens at 1 s; 1 and 2 start listening before that.
		res := getAll(t, 3, func(i int) time.Duration { return time.Duration(min(i, 1)) * 500 * time.Millisecond }, data,
			func(i int, ip string, out *os.File) (ReceiveResult, error) {
				r := &PXEReceiver{ListenDelay: time.Second, Delay: 1500 * time.Millisecond}
				r.dial, r.join = memSockets(n, ip)
				return r.Get(context.Background(), pxeListen, "f", out)
			})
		settle()
		t.Logf("passes %d, handovers %d, ignored %d, opens %d/%d/%d", s.Counters.Passes.Load(), s.Counters.PXEHandovers.Load(),
			s.Counters.PXEIgnored.Load(), res[0].Requests, res[1].Requests, res[2].Requests)
		if !lostData1 || !lostData100 || !lostRRQ {
			t.Fatalf("the sequence did not happen: lost DATA 1 %v, DATA 100 %v, RRQ %v", lostData1, lostData100, lostRRQ)
		}
		if s.Counters.Passes.Load() != 2 || s.Counters.PXEHandovers.Load() != 1 || res[2].Masters != 1 || res[2].Requests > 2 {
			t.Errorf("passes %d, handovers %d, receiver 2 acknowledged %d after %d opens; want the second pass handed to receiver 2 on its second open",
				s.Counters.Passes.Load(), s.Counters.PXEHandovers.Load(), res[2].Masters, res[2].Requests)
		}
		if s.Counters.ActivePasses.Load() != 0 {
			t.Errorf("passes still running")
		}
	})
}

// TestPXEReceiverLateData1: the server's unicast DATA 1 to the requester
// is lost; the group copy alone does not make it the acknowledging client,
// so its open ends and it listens. The server's timeout re-sends DATA 1 to
// it then: whenever it comes, a unicast DATA 1 means the server waits for
// this client's ACKs, so it starts RECEIVE at once: one open, one pass, no
// handover. (Before, it kept listening; the pass stood at block 1 until
// its re-open took the pass over again.)
func TestPXEReceiverLateData1(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(27)
		lost := false
		n.Drop = func(_, to netip.AddrPort, b []byte) bool {
			if blk, _, err := tftp.ParseData(b); err == nil && blk == 1 && to.Port() != DefaultPXEClientPort && !lost {
				lost = true
				return true
			}
			return false
		}
		data := testData(60_000, 27)
		s, stop := newPXETestServer(t, n, map[string][]byte{"f": data})
		defer stop()
		// Its open waits 0.5 s; then it listens for 4 s (ListenDelay less
		// a second per block missing), across the server's 1 s timeout.
		res := getAll(t, 1, func(int) time.Duration { return 0 }, data, func(i int, ip string, out *os.File) (ReceiveResult, error) {
			r := &PXEReceiver{ListenDelay: 5 * time.Second, Delay: 500 * time.Millisecond}
			r.dial, r.join = memSockets(n, ip)
			return r.Get(context.Background(), pxeListen, "f", out)
		})
		settle()
		if !lost || res[0].Requests != 1 || res[0].Masters != 1 || s.Counters.Passes.Load() != 1 || s.Counters.PXEHandovers.Load() != 0 {
			t.Errorf("lost %v: %d opens, acknowledged %d, passes %d, handovers %d; want one open and one pass it acknowledged",
				lost, res[0].Requests, res[0].Masters, s.Counters.Passes.Load(), s.Counters.PXEHandovers.Load())
		}
	})
}
