package mtftp

import (
	"context"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/tftp"
)

// sinkConn is a session socket that counts what is sent and reads nothing
// until closed.
type sinkConn struct {
	bytes  *atomic.Int64
	closed chan struct{}
	once   sync.Once
}

func (c *sinkConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	<-c.closed
	return 0, netip.AddrPort{}, net.ErrClosed
}
func (c *sinkConn) SetReadDeadline(time.Time) error { return nil }
func (c *sinkConn) WriteTo(b []byte, _ netip.AddrPort) error {
	c.bytes.Add(int64(len(b)))
	return nil
}
func (c *sinkConn) WriteDatagrams(_ netip.AddrPort, ds []udpio.Datagram) (int, error) {
	for _, d := range ds {
		c.bytes.Add(int64(d.Len()))
	}
	return 1, nil
}
func (c *sinkConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

// guardServer is a native server over a 4 MiB file whose sockets count
// what they send: sessions opened, stream bytes, challenge bytes.
type guardServer struct {
	*Server
	dir                         string // the root, holding image.bin
	dials, streamed, challenged atomic.Int64
	challenges                  sync.Map // peer → last cookie sent
}

func newGuardServer(t *testing.T) *guardServer {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "image.bin"), make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })
	g := &guardServer{dir: dir}
	g.Server = &Server{Files: files, MaxBlockSize: 65464, NativeStart: StartPolicy{MaxWait: time.Hour, Settle: time.Hour}}
	g.dialNative = func(netip.Addr) (nativeConn, error) {
		g.dials.Add(1)
		return &sinkConn{bytes: &g.streamed, closed: make(chan struct{})}, nil
	}
	g.sendChallenge = func(b []byte, to netip.AddrPort) {
		g.challenged.Add(int64(len(b)))
		c, err := parseChallenge(b)
		if err != nil {
			t.Errorf("bad challenge %x", b)
		}
		g.challenges.Store(to, c)
	}
	if err := g.Init(); err != nil {
		t.Fatal(err)
	}
	return g
}

func nativeRRQ(blksize int, cookie *token) *tftp.Request {
	req := &tftp.Request{Op: tftp.OpRRQ, Filename: "image.bin", Mode: "octet", Options: []tftp.Option{
		{Name: tftp.OptBlockSize, Value: strconv.Itoa(blksize)}, {Name: OptMulticast}, {Name: OptNative, Value: NativeVersion}}}
	if cookie != nil {
		req.Options = append(req.Options, tftp.Option{Name: OptCookie, Value: hex.EncodeToString(cookie[:])})
	}
	return req
}

// join sends a request for peer, answers its challenge as a real receiver
// would, and reports whether it got into a session.
func (g *guardServer) join(ctx context.Context, peer netip.AddrPort, blksize int) bool {
	g.serveNative(ctx, nativeRRQ(blksize, nil), peer, netip.Addr{})
	c, ok := g.challenges.Load(peer)
	if !ok {
		return false
	}
	tok := c.(token)
	g.serveNative(ctx, nativeRRQ(blksize, &tok), peer, netip.Addr{})
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nativeOf(peer, nativeKey{"image.bin", 4 << 20, 0, 0, 0}) != nil || g.inAny(peer)
}

func (g *guardServer) inAny(peer netip.AddrPort) bool {
	for _, ns := range g.natives {
		ns.mu.Lock()
		_, in := ns.receivers[peer]
		ns.mu.Unlock()
		if in {
			return true
		}
	}
	return false
}

func (g *guardServer) sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.natives)
}

// TestNativeJoinNeedsProof (issue 13, finding 1): requests from addresses
// that never read the answer — spoofed — get a challenge no bigger than
// the request and nothing else: no session, no socket, no stream, no file
// opened. A receiver that echoes its cookie joins; a cookie made for
// another address does not work; one address holds at most
// nativeMaxPerAddr receivers of a session; blksizes map onto three shard
// sizes and a tiny one is refused.
func TestNativeJoinNeedsProof(t *testing.T) {
	g := newGuardServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		g.Shutdown(sctx)
	}()

	var in int64
	for i := range 2000 {
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 250)}), uint16(1024+i))
		req := nativeRRQ(1468+i%40, nil) // 40 blksizes: once 40 sessions
		in += int64(len(req.Marshal(nil)))
		if !g.serveNative(ctx, req, peer, netip.Addr{}) {
			t.Fatal("an unproven native request was handed to unicast")
		}
	}
	if g.sessions() != 0 || g.dials.Load() != 0 || g.streamed.Load() != 0 {
		t.Fatalf("unproven joins made %d sessions, %d sockets, %d bytes of stream", g.sessions(), g.dials.Load(), g.streamed.Load())
	}
	if out := g.challenged.Load(); out > in/2 {
		t.Fatalf("challenges sent %d bytes for %d bytes of requests: an amplifier", out, in)
	}
	if st := g.Files.Stats(); st.Opens != 0 {
		t.Fatalf("unproven joins opened the file %d times", st.Opens)
	}

	// Someone else's cookie does not prove this address.
	victim := netip.MustParseAddrPort("192.0.2.50:4000")
	c, _ := g.challenges.Load(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 7}), 1024+7))
	stolen := c.(token)
	g.serveNative(ctx, nativeRRQ(1468, &stolen), victim, netip.Addr{})
	if g.sessions() != 0 {
		t.Fatal("a cookie made for another address was taken")
	}

	// Proven receivers join; one address is capped.
	joined := 0
	for i := range nativeMaxPerAddr + 4 {
		if g.join(ctx, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.60"), uint16(2000+i)), 1468) {
			joined++
		}
	}
	if joined != nativeMaxPerAddr || g.sessions() != 1 {
		t.Fatalf("%d receivers of one address joined in %d sessions, want %d in 1", joined, g.sessions(), nativeMaxPerAddr)
	}
	// Blksizes land on three shard sizes; 20 is refused.
	for i, blk := range []int{600, 1000, 1400, 1468, 4000, 9000, 65464} {
		g.join(ctx, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.70"), uint16(3000+i)), blk)
	}
	if n := g.sessions(); n != 3 {
		t.Fatalf("%d sessions for seven blksizes, want 3 (512, 1468, 8972)", n)
	}
	if g.join(ctx, netip.MustParseAddrPort("192.0.2.71:3000"), 20) {
		t.Fatal("blksize 20 joined")
	}
}

// TestNativeTokens (issue 13, finding 6): a DONE, STATUS or WANT carrying
// a receiver's address but not its token does nothing to it.
func TestNativeTokens(t *testing.T) {
	g, _ := newGeometry(1456*64*8, 1456, 64, 64)
	victim := netip.MustParseAddrPort("192.0.2.101:5000")
	tok := token{9, 9, 9}
	ns := &nativeSession{g: g, data: make([]byte, g.size), s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1),
		c:         &sinkConn{bytes: new(atomic.Int64), closed: make(chan struct{})},
		receivers: map[netip.AddrPort]*nativeRecv{victim: {peer: victim, tok: tok, partial: true}},
		credits:   map[netip.Addr]*addrCredit{victim.Addr(): {twentieths: 20 * 1000}},
		need:      map[int64]*repairReq{}, cursor: map[int64]int{}, repaired: map[int64]repairMark{}}
	ns.done(victim, token{}, true)
	ns.status(victim, &statusPkt{Naks: []nak{{Stripe: 1, Missing: 64}}})
	bits := []byte{0xff}
	if _, ok := ns.want(victim, &wantPkt{First: 0, Count: 8, Bits: bits}); ok {
		t.Error("a WANT without the token was taken")
	}
	if len(ns.receivers) != 1 || len(ns.needOrder) != 0 || ns.s.Counters.NativeBadToken.Load() != 2 {
		t.Fatalf("forged packets: %d receivers left, %d repairs queued, %d bad tokens counted",
			len(ns.receivers), len(ns.needOrder), ns.s.Counters.NativeBadToken.Load())
	}
	ns.status(victim, &statusPkt{Token: tok, Lost: 64, Naks: []nak{{Stripe: 1, Missing: 64}}})
	ns.done(victim, tok, true)
	if len(ns.needOrder) != 1 || len(ns.receivers) != 0 {
		t.Fatalf("the receiver's own packets: %d repairs queued, %d receivers left", len(ns.needOrder), len(ns.receivers))
	}
}

// TestNativeRepairCredit (issue 13, finding 3): a receiver that reports no
// loss but NAKs every stripe over and over gets no more repairs than one
// interleave group and a twentieth of what was sent; one that reports its
// losses gets them repaired.
func TestNativeRepairCredit(t *testing.T) {
	g, _ := newGeometry(1456*64*1000, 1456, 64, 64) // 1000 stripes, about 93 MB
	liar, honest := netip.MustParseAddrPort("192.0.2.101:5000"), netip.MustParseAddrPort("192.0.2.102:5000")
	ns := &nativeSession{g: g, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1),
		receivers: map[netip.AddrPort]*nativeRecv{}, need: map[int64]*repairReq{}, cursor: map[int64]int{}, repaired: map[int64]repairMark{}}
	ns.join(liar, time.Now(), false, token{1})
	ns.join(honest, time.Now(), false, token{2})
	asked := 0
	for round := range 30 {
		var naks []nak
		for s := range 96 {
			naks = append(naks, nak{Stripe: uint32((round*96 + s) % 1000), Missing: 64})
		}
		ns.status(liar, &statusPkt{Token: token{1}, Seen: 5000, Naks: naks})
		asked += 96 * 64
		ns.dataShards += 5000 // what was sent between its reports
		for st, r := range ns.need {
			ns.rounds += int64(r.count)
			delete(ns.need, st)
		}
		ns.needOrder = ns.needOrder[:0]
	}
	granted := ns.rounds
	limit := int64(g.k)*nativeInterleave + ns.dataShards/20
	t.Logf("asked for %d shards, granted %d (limit %d)", asked, granted, limit)
	if granted > limit {
		t.Fatalf("a receiver reporting no loss got %d repair shards, want ≤ %d", granted, limit)
	}
	// 32 receivers of one address sharing out the stripes (each NAKs its
	// own part) share one allowance: no more than one liar alone.
	ns.rounds, ns.dataShards = 0, 0
	ns.credits = nil
	for i := range 32 {
		p := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.77"), uint16(7000+i))
		ns.join(p, time.Now(), false, token{byte(i)})
	}
	for round := range 30 {
		for i := range 32 {
			p := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.77"), uint16(7000+i))
			var naks []nak
			for s := range 32 {
				naks = append(naks, nak{Stripe: uint32((round*1024 + i*32 + s) % 1000), Missing: 64})
			}
			ns.status(p, &statusPkt{Token: token{byte(i)}, Seen: 5000, Naks: naks})
			ns.dataShards += 150
		}
		for st, r := range ns.need {
			ns.rounds += int64(r.count)
			delete(ns.need, st)
		}
		ns.needOrder = ns.needOrder[:0]
	}
	if limit := int64(g.k)*nativeInterleave + ns.dataShards/20 + 64; ns.rounds > limit {
		t.Fatalf("32 receivers of one address splitting the stripes got %d repair shards, want ≤ %d", ns.rounds, limit)
	}
	ns.rounds = 0
	ns.status(honest, &statusPkt{Token: token{2}, Lost: 20000, Naks: []nak{{Stripe: 5, Missing: 64}, {Stripe: 6, Missing: 10}}})
	if ns.need[5] == nil || ns.need[5].count != 64 || ns.need[6].count != 10 {
		t.Fatalf("an honest receiver's NAKs were cut: %+v %+v", ns.need[5], ns.need[6])
	}
}

// TestNativeOneVotePerAddress (issue 13, finding 3): sixteen receivers on
// one address reporting heavy loss do not slow a room of four clean ones.
func TestNativeOneVotePerAddress(t *testing.T) {
	g, _ := newGeometry(1456*64*100, 1456, 64, 64)
	ns := &nativeSession{g: g, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1), rate: 10 << 20,
		receivers: map[netip.AddrPort]*nativeRecv{}, need: map[int64]*repairReq{}, cursor: map[int64]int{}, repaired: map[int64]repairMark{},
		dataUntil: 1000}
	now := time.Now()
	for i := range 16 {
		p := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.66"), uint16(6000+i))
		ns.receivers[p] = &nativeRecv{peer: p, last: now, lossAvg: -1, seen: 500, lost: 500, reports: 1}
	}
	for i := range 4 {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(101 + i)}), 5000)
		ns.receivers[p] = &nativeRecv{peer: p, last: now, lossAvg: -1, seen: 1000, reports: 1}
	}
	ns.control(now)
	if ns.rate < 10<<20 {
		t.Fatalf("the rate fell to %.1f MB/s: one address's receivers decided for the room", ns.rate/1e6)
	}
}

// TestParityBudget (issue 13, finding 2): sessions' parity caches together
// stay within nativeParityBudget, and parity past it is still right.
func TestParityBudget(t *testing.T) {
	g, _ := newGeometry(1456*64*400, 1456, 64, 64) // 400 stripes: 37 MB of parity each
	data := make([]byte, g.size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var used atomic.Int64
	var caches []*parityCache
	for range 8 {
		pc, err := newParityCache(g, nativeParityCache, &used)
		if err != nil {
			t.Fatal(err)
		}
		caches = append(caches, pc)
		for s := range int64(400) {
			if _, err := pc.parity(data, s, 0); err != nil {
				t.Fatal(err)
			}
			if used.Load() > nativeParityBudget {
				t.Fatalf("parity cached: %d bytes, budget %d", used.Load(), nativeParityBudget)
			}
		}
	}
	fresh, _ := newParityCache(g, 1<<30, nil)
	for _, s := range []int64{0, 399} {
		want, _ := fresh.parity(data, s, 5)
		got, _ := caches[7].parity(data, s, 5)
		if string(want) != string(got) {
			t.Fatalf("stripe %d: parity past the budget differs", s)
		}
	}
	for _, pc := range caches {
		pc.release()
	}
	if used.Load() != 0 {
		t.Fatalf("%d bytes still counted after every cache was released", used.Load())
	}
}

// recordConn is a session socket that records the datagrams written to it.
type recordConn struct {
	sinkConn
	mu   sync.Mutex
	sent []sentDatagram
}

type sentDatagram struct {
	to netip.AddrPort
	b  []byte
}

func (c *recordConn) WriteTo(b []byte, to netip.AddrPort) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, sentDatagram{to, append([]byte(nil), b...)})
	return nil
}

// TestNativeDoneAcked: a DONE is acknowledged to its sender once counted,
// and again when it comes again (its acknowledgement was lost) without
// being counted twice; a DONE without the token gets no answer.
func TestNativeDoneAcked(t *testing.T) {
	g, _ := newGeometry(1456*64*8, 1456, 64, 64)
	rcv := netip.MustParseAddrPort("192.0.2.101:5000")
	tok := token{9, 9, 9}
	c := &recordConn{sinkConn: sinkConn{bytes: new(atomic.Int64), closed: make(chan struct{})}}
	ns := &nativeSession{id: 7, g: g, c: c, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1),
		receivers: map[netip.AddrPort]*nativeRecv{rcv: {peer: rcv, tok: tok}}}
	ns.done(rcv, token{1}, true) // forged
	if len(c.sent) != 0 || len(ns.receivers) != 1 {
		t.Fatalf("a DONE without the token: %d answers, %d receivers left", len(c.sent), len(ns.receivers))
	}
	ns.done(rcv, tok, true)
	ns.done(rcv, tok, true) // the first acknowledgement was lost
	ns.done(rcv, token{1}, true)
	if len(c.sent) != 2 || ns.completed != 1 {
		t.Fatalf("%d answers, %d completed; want 2 answers, 1 completed", len(c.sent), ns.completed)
	}
	for _, d := range c.sent {
		if d.to != rcv || !isDoneAck(d.b, 7) || len(d.b) >= len(appendDone(nil, 7, tok, true)) {
			t.Fatalf("answer %x to %v: want a DONEACK of session 7, shorter than the DONE, to %v", d.b, d.to, rcv)
		}
	}
}

// TestNativeDroppedReceiverFinishes: a receiver dropped as silent (a
// stall of its own: it finished from its socket buffer) whose DONE then
// comes with its token is counted completed, not dropped, and answered;
// a forged DONE for it is not, and a repeat is answered but not counted
// again. Dropped, back and dropped again, it counts once.
func TestNativeDroppedReceiverFinishes(t *testing.T) {
	g, _ := newGeometry(1456*64*8, 1456, 64, 64)
	rcv := netip.MustParseAddrPort("192.0.2.101:5000")
	other := netip.MustParseAddrPort("192.0.2.102:5000")
	tok := token{9, 9, 9}
	c := &recordConn{sinkConn: sinkConn{bytes: new(atomic.Int64), closed: make(chan struct{})}}
	now := time.Now()
	ns := &nativeSession{id: 7, g: g, c: c, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1),
		receivers: map[netip.AddrPort]*nativeRecv{}}
	ns.join(rcv, now, false, tok)
	ns.join(other, now, false, token{4})
	later := now.Add(nativeReceiverTimeout + time.Second)
	ns.mu.Lock()
	ns.receivers[other].last = later // heard; rcv is not
	ns.measureLoss(later)
	ns.mu.Unlock()
	if ns.dropped != 1 || len(ns.receivers) != 1 {
		t.Fatalf("%d dropped, %d receivers left; want rcv dropped", ns.dropped, len(ns.receivers))
	}
	ns.done(rcv, token{1}, true) // forged
	if len(c.sent) != 0 || ns.completed != 0 || ns.dropped != 1 {
		t.Fatalf("a forged DONE: %d answers, %d completed, %d dropped", len(c.sent), ns.completed, ns.dropped)
	}
	ns.done(rcv, tok, true)
	ns.done(rcv, tok, true) // the acknowledgement was lost
	if len(c.sent) != 2 || ns.completed != 1 || ns.dropped != 0 {
		t.Fatalf("%d answers, %d completed, %d dropped; want 2, 1 and 0", len(c.sent), ns.completed, ns.dropped)
	}

	// Dropped, back (it asked again), dropped again: one dropped receiver.
	step := nativeReceiverTimeout + time.Second
	for i := 1; i <= 2; i++ {
		ns.join(rcv, later, false, tok)
		ns.mu.Lock()
		ns.measureLoss(later.Add(time.Duration(2*i) * step))
		ns.mu.Unlock()
	}
	// The session: rcv once, other once. Server-wide counters only grow:
	// rcv's first drop stays counted there.
	if ns.dropped != 2 || ns.s.Counters.Dropped.Load() != 3 {
		t.Fatalf("%d dropped (server-wide %d), want 2 (3): rcv dropped twice counts once, and other", ns.dropped, ns.s.Counters.Dropped.Load())
	}
}

// TestReceiverRepeatsDone: a receiver whose DONE is lost sends it again
// until the server acknowledges it (the server would otherwise wait 5 s
// and count it dropped: CI, TestLabImageRoom at 5 % loss), and stops after
// the acknowledgement.
func TestReceiverRepeatsDone(t *testing.T) {
	ctl, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rc := &recvState{ctl: ctl, srv: srv.LocalAddr().(*net.UDPAddr).AddrPort(), tok: token{5}, ctlIn: make(chan ctlPkt, 16)}
	rc.sess.ID = 3
	go rc.readCtl()
	finished := make(chan struct{})
	go func() {
		rc.sendDone(context.Background(), true)
		close(finished)
	}()
	buf := make([]byte, 100)
	var dones int
	for dones < 3 {
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d DONEs: %v", dones, err)
		}
		if _, tok, ok, err := parseDone(buf[:n]); err != nil || tok != rc.tok || !ok {
			t.Fatalf("got %x, want DONE ok with the token", buf[:n])
		}
		dones++
		if dones == 3 { // the first two were lost
			srv.WriteToUDPAddrPort(appendDoneAck(nil, 4), from) // another session's
			srv.WriteToUDPAddrPort(appendDoneAck(nil, 3), from)
		}
	}
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver did not stop after the DONEACK")
	}
	srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := srv.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("a DONE after the DONEACK: %x", buf[:n])
	}
}

// TestNativeTruncatedDuringRepair: image.bin is truncated on disk under a
// running session, and a receiver's NAK makes the session encode parity
// from the mapping. The memory fault ends that session (the file
// changed), releasing its locks: before, the fault unwound stream with
// the session lock held, and the session's end then waited on it forever
// while holding the server's lock, hanging every multicast request.
func TestNativeTruncatedDuringRepair(t *testing.T) {
	g := newGuardServer(t)
	g.NativeStart = StartPolicy{MaxWait: -1} // stream at once
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	peer := netip.MustParseAddrPort("192.0.2.101:5000")
	if !g.join(ctx, peer, 1456) {
		t.Fatal("the receiver did not join")
	}
	g.mu.Lock()
	var ns *nativeSession
	for _, n := range g.natives {
		ns = n
	}
	g.mu.Unlock()
	if err := os.Truncate(filepath.Join(g.dir, "image.bin"), 0); err != nil {
		t.Fatal(err)
	}
	ns.mu.Lock()
	tok := ns.receivers[peer].tok
	ns.mu.Unlock()
	if !ns.status(peer, &statusPkt{ID: ns.id, Token: tok, Lost: 64, Naks: []nak{{Stripe: 0, Missing: 4}}}) {
		t.Fatal("the receiver's report was not taken")
	}
	// Bounded: the session ends at its first repair, one NAK interval on
	// (a hang is what fails here, not a time).
	for i := 0; g.Counters.Active.Load() > 0; i++ {
		if i == 1000 {
			t.Fatal("the session did not end after its file was truncated (locks held after the fault)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !g.mu.TryLock() {
		t.Fatal("the server's lock is still held after the session ended")
	}
	g.mu.Unlock()
}

// TestMoveOrderRepeated: a receiver moved to a slower tier gets the move
// order again every nativeMoveRepeat until it is heard in the new
// session, at most nativeMoveOrders in all (CI: one lost order left
// TestLabNativeSlowAndKilled's receiver on the old stream and the new
// session dropped it as silent).
func TestMoveOrderRepeated(t *testing.T) {
	g, _ := newGeometry(1456*64*8, 1456, 64, 64)
	moved := netip.MustParseAddrPort("192.0.2.101:5000")
	other := netip.MustParseAddrPort("192.0.2.102:5000")
	c := &recordConn{sinkConn: sinkConn{bytes: new(atomic.Int64), closed: make(chan struct{})}}
	ns := &nativeSession{id: 8, g: g, c: c, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1), group: netip.MustParseAddrPort("239.255.0.1:1758"),
		receivers: map[netip.AddrPort]*nativeRecv{}}
	t0 := time.Now()
	ns.join(moved, t0, false, token{1})
	ns.join(other, t0, false, token{2})
	ns.movedIn(moved, t0)
	orders := func() (n int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, d := range c.sent {
			p, err := parseSession(d.b)
			if err != nil || p.Flags&flagMove == 0 || d.to != moved {
				t.Fatalf("sent %x to %v: want only move orders to %v", d.b, d.to, moved)
			}
			n++
		}
		return n
	}
	ns.repeatMoveOrders(t0.Add(nativeMoveRepeat / 2))
	if n := orders(); n != 0 {
		t.Fatalf("%d orders before nativeMoveRepeat passed", n)
	}
	now := t0
	for range 3 {
		now = now.Add(nativeMoveRepeat)
		ns.repeatMoveOrders(now)
	}
	if n := orders(); n != 3 {
		t.Fatalf("%d orders repeated in 3 steps, want 3", n)
	}
	// Heard in the new session: no more orders.
	ns.mu.Lock()
	ns.receivers[moved].last = now.Add(time.Millisecond)
	ns.mu.Unlock()
	for range 3 {
		now = now.Add(nativeMoveRepeat)
		ns.repeatMoveOrders(now)
	}
	if n := orders(); n != 3 {
		t.Fatalf("%d orders after the receiver was heard, want still 3", n)
	}
	// Never heard: the orders stop at nativeMoveOrders (the first was
	// sent by move itself).
	ns.mu.Lock()
	ns.receivers[moved].last = ns.receivers[moved].joined
	ns.mu.Unlock()
	for range 2 * nativeMoveOrders {
		now = now.Add(nativeMoveRepeat)
		ns.repeatMoveOrders(now)
	}
	if n := orders(); n != nativeMoveOrders-1 {
		t.Fatalf("%d orders repeated to a silent receiver, want %d", n, nativeMoveOrders-1)
	}
}

// TestNativeStallIsNotSilence: a session whose own loop did not run for
// 6 s (a starved or stopped server, a VM without CPU) drops no receiver
// for that gap — their reports could not be read — but a receiver that
// stays silent afterwards is still dropped, after the rest of its
// nativeReceiverTimeout; and a loop that only ever turns late still drops
// a silent receiver, each gap counting nativeStallCounted.
func TestNativeStallIsNotSilence(t *testing.T) {
	g, _ := newGeometry(1456*64*100, 1456, 64, 64)
	ns := &nativeSession{g: g, s: &Server{}, view: &sessionView{}, wake: make(chan struct{}, 1), rate: 10 << 20,
		receivers: map[netip.AddrPort]*nativeRecv{}, need: map[int64]*repairReq{}, cursor: map[int64]int{}, repaired: map[int64]repairMark{}}
	talks := netip.MustParseAddrPort("192.0.2.101:5000")
	quiet := netip.MustParseAddrPort("192.0.2.102:5000")
	t0 := time.Now()
	ns.join(talks, t0, false, token{1})
	ns.join(quiet, t0, false, token{2})
	in := func(p netip.AddrPort) bool { _, ok := ns.receivers[p]; return ok }
	now := t0
	step := func(d time.Duration) {
		now = now.Add(d)
		ns.control(now)
	}
	for now.Sub(t0) < 3*time.Second { // 3 s of steps, neither heard since it joined
		step(nativeControlStep)
	}
	// mid's report is read by the read loop 5.5 s into a 6 s stall of
	// the session's loop: only the 0.5 s after it is not counted.
	mid := netip.MustParseAddrPort("192.0.2.104:5000")
	ns.join(mid, t0, false, token{4})
	ns.mu.Lock()
	ns.heard(ns.receivers[mid], now.Add(5500*time.Millisecond))
	ns.mu.Unlock()
	step(6 * time.Second) // the loop stalled: no step for 6 s
	stallEnd := now
	if !in(talks) || !in(quiet) || !in(mid) {
		t.Fatalf("a receiver was dropped for the 6 s the session itself did not run (dropped %d)", ns.dropped)
	}
	ns.mu.Lock()
	ns.heard(ns.receivers[talks], now) // its report, read after the stall
	ns.mu.Unlock()
	// quiet has been silent 3 s of the session's running time (+1 s of
	// the stall counted): it goes once that reaches nativeReceiverTimeout.
	for in(quiet) && now.Sub(t0) < 30*time.Second {
		step(nativeControlStep)
	}
	if in(quiet) || !in(talks) {
		t.Fatalf("after the stall: silent receiver kept %v, talking one kept %v", in(quiet), in(talks))
	}
	if ran := now.Sub(t0) - 6*time.Second + nativeStallCounted; ran < nativeReceiverTimeout || ran > nativeReceiverTimeout+2*nativeControlStep {
		t.Errorf("the silent receiver was dropped after %v of counted silence, want %v", ran, nativeReceiverTimeout)
	}
	for in(mid) && now.Sub(t0) < 30*time.Second {
		step(nativeControlStep)
	}
	if after := now.Sub(stallEnd); after < nativeReceiverTimeout || after > nativeReceiverTimeout+2*nativeControlStep {
		t.Errorf("the receiver heard during the stall was dropped %v after it, want %v (no credit for the stall before its report)", after, nativeReceiverTimeout)
	}
	// A loop that only ever turns every 2 s: each gap counts
	// nativeStallCounted, so a silent receiver still goes.
	late := netip.MustParseAddrPort("192.0.2.103:5000")
	ns.join(late, now, false, token{3})
	steps := 0
	for in(late) && steps < 100 {
		step(2 * time.Second)
		steps++
	}
	if want := int(nativeReceiverTimeout/nativeStallCounted) + 1; steps != want {
		t.Errorf("a silent receiver in a session turning every 2 s went after %d turns, want %d", steps, want)
	}
}
