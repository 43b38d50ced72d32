package mtftp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/tftp"
)

// The native dialect (docs/native-multicast.md): one paced stream per file
// and tier, a carousel so late joiners get the beginning on the next pass,
// Reed-Solomon repairs multicast once for everyone who lost something in a
// stripe, and receivers that stay far behind moved to a slower tier.
const (
	DefaultNativeRate     = 0        // 0 = discover: start at nativeStartRate, follow the receivers' loss
	nativeStartRate       = 20 << 20 // bytes/s at the start of discovery
	nativeMinRate         = 128 << 10
	nativeMaxAutoRate     = 4 << 30
	nativeBeat            = 200 * time.Millisecond // SESSION heartbeat to the group
	nativeControlStep     = 100 * time.Millisecond // rate and slow-receiver decisions
	nativeReceiverTimeout = 5 * time.Second        // a receiver silent this long is dropped

	// nativeStallCounted: of a gap between two turns of a session's loop
	// (every nativeControlStep or heartbeat normally), at most this much
	// counts toward its receivers' silence. A longer gap means the
	// session itself did not run — a server starved of CPU or stopped, a
	// VM its host gave no CPU — so it could not have heard them: their
	// reports wait in its socket. Counting the whole gap dropped every
	// receiver not yet done on the first step after such a stall (CI,
	// TestLabMulticastDialects: 16 of 50 on a loaded 2-core VM).
	nativeStallCounted = time.Second

	// A move order is one datagram to a receiver that is losing much of
	// what is sent to it: it is repeated every nativeMoveRepeat until the
	// receiver is heard in its new session, at most nativeMoveOrders
	// times (2 s, well inside nativeReceiverTimeout). Without the repeats
	// a lost order left the receiver on the old stream until it asked
	// again, and the new session dropped it as silent (CI,
	// TestLabNativeSlowAndKilled).
	nativeMoveRepeat = 250 * time.Millisecond
	nativeMoveOrders = 8

	nativeMaxBatch    = 64       // datagrams per send call (one GSO super-datagram)
	nativeParityCache = 32 << 20 // bytes of parity kept per session
	nativeInterleave  = 64       // stripes per interleave group

	// Rate control: the loss of the receiver at the 90th percentile
	// decides — a tenth of the room losing more is congestion (and
	// their repairs would cost everyone), while one slow receiver cannot
	// hold the room back: it is moved instead. Loss above the tolerance
	// (lossTolerated at first) lowers the rate; if the loss does not fall
	// with it, it is the link's (a link that drops 5 % at any rate must
	// not slow the stream to a crawl): the tolerance rises above it and
	// the decrease is taken back.
	lossTolerated = 30  // ‰
	lossTolMargin = 20  // ‰ above a link's own loss
	lossTolMax    = 150 // ‰
	lossClean     = 20  // ‰: below this the stream speeds up quickly
	// A receiver is slow when its loss stays above lossSlow for
	// slowReports reports in a row while the room is not congested; it is
	// then moved to the next tier.
	lossSlow = 300
	// minInformative: fewer datagrams say nothing about loss; a
	// receiver's counts add up over control steps until they reach it.
	minInformative = 256
	slowReports    = 4
	maxTiers       = 4
)

// nativeConn is a session socket: the narrow conn plus batched sends.
// The read loop's WriteTo (join answers, WANT acks) runs while stream's
// WriteDatagrams does; udpio.Conn allows that (its package comment), and
// stream is the only caller of WriteDatagrams.
type nativeConn interface {
	conn
	WriteDatagrams(dst netip.AddrPort, ds []udpio.Datagram) (syscalls int, err error)
}

// nativeKey names one native session: a file version, a shard size and a
// tier (0 = the main stream; slower tiers take the slow receivers).
type nativeKey struct {
	name        string
	size, mtime int64
	shard       int
	tier        int
}

type nativeRecv struct {
	peer netip.AddrPort
	tok  token // its cookie: STATUS, WANT and DONE must carry it
	// partial: the receiver asked for part of the file (OptWant); its
	// WANTs name the stripes, and wantFrom remembers the position each
	// was served from (a repeated WANT, its ACK lost, gets the same
	// answer and schedules nothing again).
	partial  bool
	wantSegs int // WANT segments it said will follow
	wantFrom map[uint32]uint64
	joined   time.Time
	last     time.Time     // last packet from it
	stallAt  time.Duration // the session's stalled when it was last heard
	lossPerM uint16
	goodKBps uint32
	reports  int // status reports since the last rate decision (fresh when > 0)
	slow     int // consecutive reports above lossSlow
	complete uint32
	// Datagrams seen and lost since its loss was last taken: they add
	// up over reports until there are enough to say something (at a low
	// rate one report holds a handful).
	seen, lost uint64
	informed   bool    // lossPerM is fresh for this control step
	lossAvg    float64 // ‰, smoothed over measurements; < 0 before the first
	// Moved in from a faster tier: move orders sent, the last one at
	// orderAt, until it is heard here (last after joined).
	moveOrders int
	orderAt    time.Time
}

// repairReq is a stripe's pending repair: the most shards any receiver
// misses. It waits until due (one NAK interval after the first NAK) so the
// other receivers' NAKs for the stripe merge into it.
type repairReq struct {
	count   int
	lacks   uint64 // union of the NAKs' missing data shards
	due     time.Time
	started bool
}

// repairMark remembers a stripe's last repair round (at: when its last
// shard left): a NAK that arrives before those shards can have reached its
// sender asks for them again, and is ignored unless it wants more.
type repairMark struct {
	at    time.Time
	count int
}

// addrCredit is one address's repair allowance in a session.
type addrCredit struct {
	twentieths int64 // of a shard
	lastSent   int64 // the session's shards sent when it was last topped up
}

type nativeSession struct {
	s      *Server
	key    nativeKey
	id     uint32
	file   *filestore.File
	data   []byte
	g      geometry
	c      nativeConn
	group  netip.AddrPort
	local  netip.Addr // where the session socket lives (slower tiers open theirs there too)
	start  time.Time
	sha    [32]byte
	maxBps float64 // 0 = discover

	wake chan struct{}
	view *sessionView // what Sessions shows
	wire atomic.Int64 // bytes sent (one atomic per batch, not the session lock)

	mu             sync.Mutex
	receivers      map[netip.AddrPort]*nativeRecv
	finished       map[netip.AddrPort]token // receivers whose DONE was counted: a repeated DONE is acknowledged again
	droppedTok     map[netip.AddrPort]token // receivers dropped as silent: a DONE of theirs still counts (done)
	closed         bool
	shaOK          bool
	seq            uint64   // next carousel stripe position
	pktSeq         uint32   // datagrams sent
	gi             int      // next datagram of the interleave group starting at seq
	dataUntil      uint64   // carousel stops at this position (the last one anyone needs)
	allUntil       uint64   // every stripe goes out before this position (a full pass after the latest whole-file join)
	sendAt         []uint64 // per stripe: partial receivers need it at positions before this (nil: none asked)
	grp            []uint64 // positions of the interleave group under way that go out
	grpSet         bool     // grp holds the group starting at seq
	lastJoin       time.Time
	policy         StartPolicy
	need           map[int64]*repairReq // stripes asked for, not yet repaired
	needOrder      []int64              // in the order asked (so in order of due time)
	repaired       map[int64]repairMark // stripes recently repaired: the last round sent
	cursor         map[int64]int
	rate           float64   // bytes/s
	peak           float64   // the rate at the last congestion (0: none yet)
	decreased      time.Time // when the rate was last lowered and not yet judged
	lossAtDecrease int       // ‰, the 90th percentile that lowered it
	tol            int       // ‰ of loss taken for the link's own (0: not set)
	idle           bool
	turnAt         time.Time     // the loop's last turn (gather or control step)
	stalled        time.Duration // time the loop did not run beyond nativeStallCounted per gap: nobody's silence

	// for the log line and counters (under mu)
	everJoined, completed, failed, dropped, moved int
	dataShards, repairShards, naks, passes        int64
	rounds                                        int64 // repair rounds (one per stripe and NAK window)
	creditDenied                                  int64 // NAKs beyond the asking address's reported loss
	// credits: repair shards each address may still ask for, in 20ths
	// of a shard — what its receivers reported lost, plus a twentieth of
	// what was sent since (losses at a stream's tail show in no gap),
	// plus at most one interleave group (or the file) when it first
	// joined. Per address, not per receiver: fake receivers on one
	// machine share one allowance (docs/security.md).
	credits map[netip.Addr]*addrCredit
}

// serveNative joins a request for the native dialect to its file's tier-0
// session, creating it if needed, and answers with the session's
// parameters. It returns at once: the session serves the receiver from
// now on. false (nothing sent) hands the request back for unicast.
func (s *Server) serveNative(ctx context.Context, req *tftp.Request, peer netip.AddrPort, local netip.Addr) bool {
	fallback := func(reason string) bool {
		s.Counters.Fallbacks.Add(1)
		s.Log.Info().Str("client", peer.String()).Str("file", req.Filename).Str("reason", reason).Msg("mtftp: native multicast refused, unicast instead")
		return false
	}
	if req.Mode != "octet" {
		return fallback("mode " + req.Mode)
	}
	if v, _ := req.Option(OptNative); v != NativeVersion {
		return fallback("native dialect version " + v + ", this server speaks " + NativeVersion)
	}
	// No state, no stream and no file opened before the receiver proves
	// it reads what is sent to its address: it must echo the cookie.
	cookie, _ := req.Option(OptCookie)
	tok, proven := s.cookies.valid(peer, cookie, time.Now())
	if !proven {
		s.Counters.NativeChallenges.Add(1)
		s.challenge(peer, local)
		return true
	}
	f, err := s.Files.Get(req.Filename)
	if err != nil {
		return false // the unicast path answers with the right ERROR
	}
	neg := tftp.Negotiate(req, tftp.Limits{MaxBlockSize: s.MaxBlockSize, MaxWindow: 1}, f.Size())
	blk := nativeBlockSize(neg.BlockSize)
	if blk == 0 {
		f.Release()
		return fallback(fmt.Sprintf("blksize %d too small for the native dialect (at least %d)", neg.BlockSize, nativeBlockSizes[len(nativeBlockSizes)-1]))
	}
	shard := blk - nativeBlkAdjust
	key := nativeKey{f.Name(), f.Size(), f.ModTime().UnixNano(), shard, 0}
	partial, segs := false, 0
	for _, o := range req.Options {
		if strings.EqualFold(o.Name, OptWant) {
			// Its value: how many WANT segments will follow (a session
			// waits for them before it starts, so a receiver's first
			// stripes are not pushed to a second pass).
			partial = true
			segs, _ = strconv.Atoi(o.Value)
		}
	}

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		f.Release()
		return false
	}
	// A receiver that asks again (its SESSION reply was lost) is in a
	// session already, perhaps a slower tier: answer from there.
	ns := s.nativeOf(peer, key)
	if ns == nil {
		ns = s.natives[key]
		if ns != nil && ns.fromAddr(peer.Addr()) >= nativeMaxPerAddr {
			s.mu.Unlock()
			f.Release()
			ns.refuse(peer, fmt.Sprintf("%d receivers from %v already", nativeMaxPerAddr, peer.Addr()))
			return true
		}
		if ns == nil {
			var reason string
			if ns, reason = s.newNative(ctx, key, f, local, 0, s.startPolicy(key.name, req)); ns == nil {
				s.mu.Unlock()
				f.Release()
				return fallback(reason)
			}
			f = nil // the session owns it
		}
		ns.join(peer, time.Now(), partial, tok)
		if partial {
			ns.expectWants(peer, segs)
		}
	}
	s.mu.Unlock()
	if f != nil {
		f.Release()
	}
	ns.reply(peer, 0)
	return true
}

// nativeOf finds the session of key's file (any tier) that peer is in.
// Called with s.mu held.
func (s *Server) nativeOf(peer netip.AddrPort, key nativeKey) *nativeSession {
	for k, ns := range s.natives {
		k.tier = 0
		if k != key {
			continue
		}
		ns.mu.Lock()
		_, in := ns.receivers[peer]
		ns.mu.Unlock()
		if in {
			return ns
		}
	}
	return nil
}

// newNative starts a session for key on a fresh group. Called with s.mu
// held; on success the session owns f (f.Release is its job).
func (s *Server) newNative(ctx context.Context, key nativeKey, f *filestore.File, local netip.Addr, rate float64, policy StartPolicy) (*nativeSession, string) {
	g, err := newGeometry(key.size, key.shard, DefaultStripeData, DefaultStripeParity)
	if err != nil {
		return nil, err.Error()
	}
	group, c, refused := groupSocket(s, s.dialNative, local, "native session socket")
	if refused != "" {
		return nil, refused
	}
	ns := &nativeSession{
		s: s, key: key, id: rand.Uint32(), file: f, data: f.Data(), g: g, c: c,
		group: group, local: local, start: time.Now(),
		maxBps: float64(s.NativeRate), wake: make(chan struct{}, 1),
		receivers: map[netip.AddrPort]*nativeRecv{}, need: map[int64]*repairReq{}, cursor: map[int64]int{},
		repaired: map[int64]repairMark{}, policy: policy,
	}
	switch {
	case rate > 0:
		ns.rate = rate
		ns.maxBps = rate // a slow tier keeps the pace it was made for
	case ns.maxBps > 0:
		ns.rate = ns.maxBps
	default:
		ns.rate = nativeStartRate
	}
	if sum, ok := s.cachedSHA(key); ok {
		ns.sha, ns.shaOK = sum, true
	}
	// The status view, registered here since s.mu is held (track takes it).
	ns.view = &sessionView{desc: Session{Dialect: "native", File: key.name, Group: ns.group, BlockSize: g.shard,
		Size: g.size, Blocks: int(g.blocks), Start: ns.start}}
	if s.views == nil {
		s.views = make(map[*sessionView]struct{})
	}
	s.views[ns.view] = struct{}{}
	s.natives[key] = ns
	s.launch(ctx, &s.Counters.NativeSessions, ns.run)
	return ns, ""
}

// join adds a receiver: for the whole file, the carousel runs until it
// has passed every stripe once since this join; a partial receiver
// (OptWant) names its stripes with WANTs (want).
func (ns *nativeSession) join(peer netip.AddrPort, now time.Time, partial bool, tok token) {
	ns.mu.Lock()
	ns.receivers[peer] = &nativeRecv{peer: peer, joined: now, last: now, stallAt: ns.stalledAt(now), lossAvg: -1, partial: partial, tok: tok}
	if ns.credits == nil {
		ns.credits = map[netip.Addr]*addrCredit{}
	}
	if ns.credits[peer.Addr()] == nil {
		ns.credits[peer.Addr()] = &addrCredit{twentieths: 20 * min(int64(ns.g.k)*nativeInterleave, ns.g.blocks), lastSent: ns.dataShards + ns.repairShards}
	}
	ns.everJoined++
	ns.lastJoin = now
	ns.publish()
	if !partial {
		// One pass from the group under way; what it missed of that
		// group's start it asks for with NAKs like any loss (the parity
		// that repairs it costs no more than the rows it missed, and
		// serves every late joiner at once), rather than costing
		// everyone another group.
		ns.allUntil = max(ns.allUntil, ns.seq+uint64(ns.g.stripes))
		ns.dataUntil = max(ns.dataUntil, ns.allUntil)
		ns.idle = false
	}
	ns.mu.Unlock()
	ns.s.Counters.NativeReceivers.Add(1)
	ns.poke()
}

// expectWants records how many WANT segments a partial receiver said
// will follow (at most the file has).
func (ns *nativeSession) expectWants(peer netip.AddrPort, segs int) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if r := ns.receivers[peer]; r != nil {
		r.wantSegs = max(1, min(segs, int(ns.g.stripes/maxWantBits)+1))
	}
}

// wantsPending reports whether a partial receiver still owes WANTs.
// Called with ns.mu held.
func (ns *nativeSession) wantsPending() bool {
	for _, r := range ns.receivers {
		if r.partial && len(r.wantFrom) < r.wantSegs {
			return true
		}
	}
	return false
}

// fromAddr counts the session's receivers at address a.
func (ns *nativeSession) fromAddr(a netip.Addr) int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := 0
	for p := range ns.receivers {
		if p.Addr() == a {
			n++
		}
	}
	return n
}

// refuse answers a join with a TFTP ERROR from the session's socket.
func (ns *nativeSession) refuse(peer netip.AddrPort, why string) {
	ns.s.Counters.Fallbacks.Add(1)
	ns.s.Log.Warn().Str("client", peer.String()).Str("file", ns.key.name).Str("reason", why).Msg("mtftp: native join refused")
	if err := ns.c.WriteTo(tftp.AppendError(nil, tftp.ErrCodeUndefined, "native join refused: "+why), peer); err != nil {
		ns.s.Counters.SendErrors.Add(1)
	}
}

// publish shows the current receivers in the status view. Called with
// ns.mu held.
func (ns *nativeSession) publish() {
	r := make([]Receiver, 0, len(ns.receivers))
	for p := range ns.receivers {
		r = append(r, Receiver{Addr: p})
	}
	slices.SortFunc(r, func(a, b Receiver) int { return a.Addr.Compare(b.Addr) })
	ns.view.setReceivers(r)
}

func (ns *nativeSession) poke() {
	select {
	case ns.wake <- struct{}{}:
	default:
	}
}

// describe fills a SESSION packet with the session's state. Called with
// ns.mu held.
func (ns *nativeSession) describe(flags uint8) sessionPkt {
	p := sessionPkt{
		ID: ns.id, Flags: flags, Group: ns.group, Size: uint64(ns.g.size), ShardSize: uint16(ns.g.shard),
		K: uint16(ns.g.k), M: uint16(ns.g.m), Interleave: nativeInterleave, Seq: ns.seq, NakInterval: uint16(ns.nakInterval() / time.Millisecond),
		Receivers: uint32(len(ns.receivers)), RateKBps: uint32(min(ns.rate/1024, 1<<32-1)), Name: ns.key.name,
	}
	if ns.shaOK {
		p.Flags |= flagSHA
		p.SHA256 = ns.sha
	}
	if ns.idle {
		p.Flags |= flagIdle
	}
	if ns.closed {
		p.Flags |= flagClosed
	}
	return p
}

// nakInterval spreads the receivers' status packets so that however many
// there are the server gets about 1000 a second at most.
func (ns *nativeSession) nakInterval() time.Duration {
	return min(time.Second, max(50*time.Millisecond, time.Duration(len(ns.receivers))*time.Millisecond))
}

// reply sends the session's description to one receiver (a join answer or
// a move order).
func (ns *nativeSession) reply(peer netip.AddrPort, flags uint8) {
	ns.mu.Lock()
	p := ns.describe(flags)
	ns.mu.Unlock()
	if err := ns.c.WriteTo(appendSession(nil, &p), peer); err != nil {
		ns.s.Counters.SendErrors.Add(1)
	}
}

// run is the session: a reader goroutine takes the receivers' reports,
// this one paces the stream. It ends when no receiver is left.
func (ns *nativeSession) run(ctx context.Context) {
	s := ns.s
	defer s.wg.Done()
	go ns.readLoop()
	// The digest reads the mapping: the session keeps the file until it
	// is done (releasing it earlier could unmap it under the hash).
	hashed := make(chan struct{})
	if ns.shaOK {
		close(hashed)
	} else {
		go func() { defer close(hashed); ns.digest() }()
	}
	defer func() { <-hashed; ns.release() }()
	var outcome tftp.Outcome
	var err error
	// A file truncated under the mapping faults here: the session ends,
	// not the server.
	if ferr := filestore.ReadMapped(func() { outcome, err = ns.stream(ctx) }); ferr != nil {
		outcome, err = tftp.OutcomeFileChanged, ferr
	}
	ns.finish(outcome, err)
}

// stream runs the carousel and repairs until the session ends; it returns
// the outcome for the log.
func (ns *nativeSession) stream(ctx context.Context) (tftp.Outcome, error) {
	lifetime := time.NewTimer(ns.s.timing().lifetime)
	defer lifetime.Stop()
	// Gather receivers (the start policy, native_start.go). Heartbeats
	// go out meanwhile: a receiver that hears none has not got its group
	// membership through (a lost IGMP report behind a snooping switch)
	// and joins again in time.
	if done := ns.gather(ctx); done != "" {
		return done, ctx.Err()
	}
	p, err := ns.newPacer()
	if err != nil {
		return tftp.OutcomeError, err
	}
	defer p.pc.release()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return tftp.OutcomeShutdown, ctx.Err()
		case <-lifetime.C:
			return ns.lifetimeOver()
		default:
		}
		now := time.Now()
		ns.controlStep(ctx, p, now)
		left, err := ns.planBatch(p, now)
		if left == 0 {
			if ns.empty() { // takes the server's lock to make it final
				return tftp.OutcomeOK, nil
			}
			continue
		}
		if err != nil {
			return tftp.OutcomeError, err
		}
		if len(p.beat) > 0 {
			ns.send(p.beat)
			p.nextBeat = now.Add(nativeBeat)
		}
		if len(p.ds) > 0 {
			ns.sendBatch(p)
			continue
		}
		// Nothing to send now: wait for tokens, a report, or the next
		// heartbeat or control step.
		timer.Reset(p.wait())
		select {
		case <-timer.C:
		case <-ns.wake:
			timer.Stop()
		case <-ctx.Done():
			return tftp.OutcomeShutdown, ctx.Err()
		case <-lifetime.C:
			return ns.lifetimeOver()
		}
	}
}

func (ns *nativeSession) lifetimeOver() (tftp.Outcome, error) {
	return tftp.OutcomeLifetime, fmt.Errorf("session lifetime %s exceeded", ns.s.timing().lifetime)
}

// pacer is stream's state between batches: a token bucket filled at the
// session's rate, the heartbeat and control step times, and the buffers
// a batch is planned in.
type pacer struct {
	hdrs               []byte
	ds                 []udpio.Datagram // the batch planned
	pc                 *parityCache
	beat               []byte  // the heartbeat planned with it (empty: none)
	pkt                float64 // bytes of one datagram
	tokens, rate       float64 // bytes; bytes/s when the batch was planned
	last               time.Time
	nextBeat, nextStep time.Time
	due                time.Time // the first repair's due time (zero: none asked)
	idle               bool      // nothing to send: the carousel done, no repair asked
}

func (ns *nativeSession) newPacer() (*pacer, error) {
	pc, err := newParityCache(ns.g, nativeParityCache, &ns.s.parityUsed)
	if err != nil {
		return nil, err
	}
	pkt := float64(dataHdrLen + ns.g.shard)
	now := time.Now()
	return &pacer{
		hdrs: make([]byte, nativeMaxBatch*dataHdrLen), ds: make([]udpio.Datagram, 0, nativeMaxBatch),
		pc: pc, beat: make([]byte, 0, 256), pkt: pkt, tokens: pkt, last: now, nextStep: now.Add(nativeControlStep),
	}, nil
}

// controlStep makes the rate and slow-receiver decisions once per
// nativeControlStep and moves the slow receivers to a slower tier.
func (ns *nativeSession) controlStep(ctx context.Context, p *pacer, now time.Time) {
	if !now.After(p.nextStep) {
		return
	}
	moves := ns.control(now)
	p.nextStep = now.Add(nativeControlStep)
	for _, r := range moves {
		ns.move(ctx, r)
	}
	ns.repeatMoveOrders(now)
}

// movedIn notes that peer joined this session by a move order, sent now.
func (ns *nativeSession) movedIn(peer netip.AddrPort, now time.Time) {
	ns.mu.Lock()
	if r := ns.receivers[peer]; r != nil {
		r.moveOrders, r.orderAt = 1, now
	}
	ns.mu.Unlock()
}

// repeatMoveOrders sends the move order again to receivers moved in that
// have not been heard here yet (nativeMoveRepeat, nativeMoveOrders).
func (ns *nativeSession) repeatMoveOrders(now time.Time) {
	var again []netip.AddrPort
	ns.mu.Lock()
	for p, r := range ns.receivers {
		if r.moveOrders == 0 || r.moveOrders >= nativeMoveOrders || r.last.After(r.joined) || now.Sub(r.orderAt) < nativeMoveRepeat {
			continue
		}
		r.moveOrders++
		r.orderAt = now
		again = append(again, p)
	}
	ns.mu.Unlock()
	for _, p := range again {
		ns.reply(p, flagMove)
	}
}

// planBatch plans into p the batch the tokens allow (repairs first, then
// the carousel) and a heartbeat when one is due or the stream went idle
// or busy. It returns the number of receivers: with none, nothing is
// planned. Planning encodes parity from the mapping: a fault there (the
// file truncated) unwinds through here, and the deferred unlock keeps
// the session's lock from being held by a dead stream.
func (ns *nativeSession) planBatch(p *pacer, now time.Time) (left int, err error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	left, p.rate = len(ns.receivers), ns.rate
	if left == 0 {
		return 0, nil
	}
	p.tokens = min(p.tokens+p.rate*now.Sub(p.last).Seconds(), max(2*p.pkt, p.rate*0.002))
	p.last = now
	n := 0
	if p.tokens >= p.pkt {
		n = min(nativeMaxBatch, int(p.tokens/p.pkt))
	}
	p.ds, err = ns.plan(p.ds[:0], n, p.hdrs, p.pc, now)
	idle := ns.seq >= ns.dataUntil && len(ns.needOrder) == 0
	p.due = time.Time{}
	if len(ns.needOrder) > 0 {
		p.due = ns.need[ns.needOrder[0]].due
	}
	changed := idle != ns.idle
	ns.idle, p.idle = idle, idle
	p.beat = p.beat[:0]
	if now.After(p.nextBeat) || changed {
		d := ns.describe(0)
		p.beat = appendSession(p.beat, &d)
	}
	return left, err
}

// sendBatch sends the planned batch to the group and spends its tokens.
func (ns *nativeSession) sendBatch(p *pacer) {
	bytes := 0
	for _, d := range p.ds {
		bytes += d.Len()
	}
	if _, err := ns.c.WriteDatagrams(ns.group, p.ds); err != nil {
		ns.s.Counters.SendErrors.Add(1)
	}
	p.tokens -= float64(bytes)
	ns.account(len(p.ds), bytes)
}

// wait is how long stream may sleep with nothing to send: until the next
// heartbeat, control step or due repair, or until the tokens for one
// datagram are in.
func (p *pacer) wait() time.Duration {
	wait := min(time.Until(p.nextBeat), time.Until(p.nextStep))
	if !p.due.IsZero() {
		wait = min(wait, time.Until(p.due))
	}
	if !p.idle && p.tokens < p.pkt {
		wait = min(wait, max(time.Millisecond, time.Duration((p.pkt-p.tokens)/p.rate*float64(time.Second))))
	}
	return max(wait, 100*time.Microsecond)
}

// gather waits until the start policy says go; it returns an outcome if
// the session ends meanwhile, else "".
func (ns *nativeSession) gather(ctx context.Context) tftp.Outcome {
	timer := time.NewTimer(0)
	defer timer.Stop()
	nextBeat := time.Now()
	for {
		now := time.Now()
		ns.mu.Lock()
		ns.turn(now)
		start, next := ns.policy.startAt(len(ns.receivers), ns.start, ns.lastJoin, now)
		if start && ns.wantsPending() && now.Before(ns.start.Add(max(ns.policy.MaxWait, 0))) {
			// A partial receiver that joined has not said what it wants
			// yet: starting now would serve its first stripes only on a
			// second pass. Its WANT wakes us; MaxWait still bounds this.
			start, next = false, ns.start.Add(max(ns.policy.MaxWait, 0))
		}
		var beat []byte
		if !now.Before(nextBeat) {
			p := ns.describe(0)
			beat = appendSession(nil, &p)
		}
		ns.mu.Unlock()
		if beat != nil {
			ns.send(beat)
			nextBeat = now.Add(nativeBeat)
		}
		if start {
			return ""
		}
		timer.Reset(max(time.Until(earlier(next, nextBeat)), time.Millisecond))
		select {
		case <-timer.C:
		case <-ns.wake: // a join: the count or the settling changed
			timer.Stop()
		case <-ctx.Done():
			return tftp.OutcomeShutdown
		}
	}
}

func (ns *nativeSession) send(b []byte) {
	if err := ns.c.WriteTo(b, ns.group); err != nil {
		ns.s.Counters.SendErrors.Add(1)
	}
	ns.account(0, len(b))
}

func (ns *nativeSession) account(datagrams, bytes int) {
	ns.wire.Add(int64(bytes))
	ns.s.Counters.DataSent.Add(uint64(datagrams))
	ns.s.Counters.BytesSent.Add(uint64(bytes))
}

// plan appends up to n datagrams: repairs first (receivers are waiting on
// them), then the carousel. Called with ns.mu held.
func (ns *nativeSession) plan(ds []udpio.Datagram, n int, hdrs []byte, pc *parityCache, now time.Time) ([]udpio.Datagram, error) {
	ds, err := ns.planRepairs(ds, n, hdrs, pc, now)
	if err != nil {
		return ds, err
	}
	repairs := len(ds)
	ds = ns.planCarousel(ds, n, hdrs)
	ns.view.sent.Add(uint64(len(ds)))
	ns.view.repairs.Add(uint64(repairs))
	ns.view.pos.Store(uint64(int64(ns.seq%uint64(ns.g.stripes))*int64(ns.g.k)) + uint64(ns.gi/max(1, len(ns.grp))))
	return ds, nil
}

// planRepairs takes one shard from each due repair in turn, so that a
// burst lost on the way (a whole GSO super-datagram, a switch buffer
// overflowing) costs each stripe one shard rather than one stripe all.
func (ns *nativeSession) planRepairs(ds []udpio.Datagram, n int, hdrs []byte, pc *parityCache, now time.Time) ([]udpio.Datagram, error) {
	due := 0
	for due < len(ns.needOrder) && !ns.need[ns.needOrder[due]].due.After(now) {
		due++
	}
	for progressed := true; progressed && len(ds) < n; {
		progressed = false
		for _, st := range ns.needOrder[:due] {
			req := ns.need[st]
			if len(ds) == n || req.count <= 0 {
				continue
			}
			if !req.started {
				// A repair round starts: NAKs that cannot have seen it
				// yet and want no more than it brings are ignored.
				req.started = true
				ns.repaired[st] = repairMark{now, req.count}
				ns.rounds++
			}
			req.count--
			progressed = true
			h := hdrs[len(ds)*dataHdrLen:][:dataHdrLen]
			payload, shard, err := ns.repairShard(st, req, pc)
			if err != nil {
				return ds, err
			}
			putDataHdr(h, dataHdr{opNativeRepair, ns.id, ns.nextSeq(), uint32(st), uint16(shard)})
			ds = append(ds, udpio.Datagram{Hdr: h, Payload: payload})
			ns.repairShards++
			ns.s.Counters.Repairs.Add(1)
		}
	}
	// Drop the finished requests, keeping the order; a round is marked
	// as sent when its last shard leaves.
	kept := ns.needOrder[:0]
	for i, st := range ns.needOrder {
		if i < due && ns.need[st].count <= 0 {
			delete(ns.need, st)
			m := ns.repaired[st]
			m.at = now
			ns.repaired[st] = m
			continue
		}
		kept = append(kept, st)
	}
	ns.needOrder = kept
	return ds, nil
}

// repairShard picks stripe st's next repair: parity first (useful to
// everyone); once the stripe's parity is spent, the data shards the NAKs
// name (or, without names, the stripe's data in turn).
func (ns *nativeSession) repairShard(st int64, req *repairReq, pc *parityCache) ([]byte, int, error) {
	g := ns.g
	r := ns.cursor[st]
	if r < g.m {
		ns.cursor[st] = r + 1
		p, err := pc.parity(ns.data, st, r)
		return p, g.k + r, err
	}
	var i int
	if req.lacks != 0 {
		i = bits.TrailingZeros64(req.lacks)
		req.lacks &^= 1 << i
	} else {
		ns.cursor[st] = r + 1
		i = (r - g.m) % g.dataIn(st)
	}
	off, sz := g.span(st, i)
	return ns.data[off : off+int64(sz)], i, nil
}

// planCarousel appends the carousel's next datagrams. Stripes go out in
// interleaved groups: shard 0 of each of the group's stripes, then shard
// 1 of each, and so on, so that a burst lost on the way costs each stripe
// a shard or two, which one parity shard per stripe repairs for everyone.
//
// Only the group's stripes that somebody needs go out: all of them within
// a whole-file receiver's pass (allUntil), else those a partial receiver
// wants at this position (sendAt).
func (ns *nativeSession) planCarousel(ds []udpio.Datagram, n int, hdrs []byte) []udpio.Datagram {
	g := ns.g
	for len(ds) < n && ns.seq < ns.dataUntil {
		if !ns.grpSet {
			ns.grp, ns.grpSet = ns.groupPositions(ns.grp[:0], ns.seq), true
		}
		gl := len(ns.grp)
		if ns.gi >= g.k*gl {
			ns.gi, ns.grpSet = 0, false
			if ns.seq += uint64(ns.groupLen(ns.seq)); ns.seq%uint64(g.stripes) == 0 {
				ns.passes++
			}
			continue
		}
		i, j := ns.gi/gl, ns.gi%gl
		ns.gi++
		pos := ns.grp[j]
		st := int64(pos % uint64(g.stripes))
		if i >= g.dataIn(st) {
			continue // the last stripe's missing tail
		}
		off, sz := g.span(st, i)
		h := hdrs[len(ds)*dataHdrLen:][:dataHdrLen]
		putDataHdr(h, dataHdr{opNativeData, ns.id, ns.nextSeq(), uint32(pos), uint16(i)})
		ds = append(ds, udpio.Datagram{Hdr: h, Payload: ns.data[off : off+int64(sz)]})
		ns.dataShards++
	}
	return ds
}

// groupPositions appends the positions of the interleave group starting at
// seq that somebody needs.
func (ns *nativeSession) groupPositions(b []uint64, seq uint64) []uint64 {
	stripes := uint64(ns.g.stripes)
	for pos := seq; pos < seq+uint64(ns.groupLen(seq)); pos++ {
		if pos < ns.allUntil || (ns.sendAt != nil && ns.sendAt[pos%stripes] > pos) {
			b = append(b, pos)
		}
	}
	return b
}

// want schedules the stripes a partial receiver names: each goes out at
// its first carousel position from the next interleave group on (the
// group under way has chosen its stripes). It returns that position for
// the receiver's WANTACK, and false if from is no partial receiver.
func (ns *nativeSession) want(from netip.AddrPort, p *wantPkt) (uint64, bool) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	r := ns.receivers[from]
	if r == nil || !r.partial || !hmac.Equal(p.Token[:], r.tok[:]) {
		return 0, false
	}
	ns.heard(r, time.Now())
	if at, ok := r.wantFrom[p.First]; ok {
		return at, true // asked again: its ACK was lost
	}
	stripes := uint64(ns.g.stripes)
	// Receivers send aligned segments of maxWantBits (the last one
	// shorter): anything else would let one receiver make a map entry,
	// and a scan, per stripe.
	if p.First%maxWantBits != 0 || uint64(p.First)+uint64(p.Count) > stripes ||
		uint64(p.Count) != min(maxWantBits, stripes-uint64(p.First)) {
		return 0, false
	}
	at := ns.seq
	if ns.grpSet {
		at += uint64(ns.groupLen(ns.seq))
	}
	if ns.sendAt == nil {
		ns.sendAt = make([]uint64, stripes)
	}
	for i := uint32(0); i < p.Count; i++ {
		if p.Bits[i/8] == 0 {
			i |= 7 // the whole byte is clear
			continue
		}
		if p.Bits[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		st := uint64(p.First + i)
		pos := at + (st+stripes-at%stripes)%stripes // first position ≥ at of stripe st
		ns.sendAt[st] = max(ns.sendAt[st], pos+1)
		ns.dataUntil = max(ns.dataUntil, pos+1)
	}
	if r.wantFrom == nil {
		r.wantFrom = map[uint32]uint64{}
	}
	r.wantFrom[p.First] = at
	ns.idle = false
	ns.poke()
	return at, true
}

// groupLen is the number of stripes in the interleave group starting at
// carousel position seq (groups never cross the end of a pass).
func (ns *nativeSession) groupLen(seq uint64) int {
	return interleaveGroup(seq, ns.g.stripes)
}

func interleaveGroup(seq uint64, stripes int64) int {
	return int(min(uint64(nativeInterleave), uint64(stripes)-seq%uint64(stripes)))
}

// nextSeq numbers the next datagram. Called with ns.mu held.
func (ns *nativeSession) nextSeq() uint32 {
	ns.pktSeq++
	return ns.pktSeq
}

// control runs every control step: it drops silent receivers, sets the
// rate from the receivers' loss (90th percentile), and returns the receivers that
// stay far behind a stream the others keep up with (to be moved).
func (ns *nativeSession) control(now time.Time) []*nativeRecv {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	defer ns.publish()
	ns.turn(now)
	ns.forgetRepairs(now)
	losses, addrs := ns.measureLoss(now)
	// Decide on the rate only when at least half the receivers have
	// measured: a step where a few did (at a low rate, each needs several
	// steps to gather enough datagrams) says little about the room.
	if len(losses) == 0 || 2*len(losses) < addrs || ns.idle {
		return nil
	}
	return ns.slowReceivers(ns.adjustRate(now, losses))
}

// forgetRepairs drops the marks of repair rounds too old to explain a NAK.
func (ns *nativeSession) forgetRepairs(now time.Time) {
	for st, m := range ns.repaired {
		if now.Sub(m.at) > 2*ns.nakInterval() && ns.need[st] == nil {
			delete(ns.repaired, st)
		}
	}
}

// turn notes a turn of the session's loop at now: of the gap since the
// last one, what exceeds nativeStallCounted is time the session did not
// run, which counts toward no receiver's silence (nativeStallCounted).
// Called with ns.mu held.
func (ns *nativeSession) turn(now time.Time) {
	if stalled := ns.stalledAt(now); stalled > ns.stalled {
		ns.stalled = stalled
		ns.s.Log.Warn().Str("file", ns.key.name).Int("tier", ns.key.tier).Dur("gap", now.Sub(ns.turnAt)).
			Msg("mtftp: native session did not run (server starved, stopped or blocked): receivers' silence meanwhile not counted")
	}
	ns.turnAt = now
}

// heard notes a packet from r at now. Called with ns.mu held.
func (ns *nativeSession) heard(r *nativeRecv, now time.Time) {
	r.last, r.stallAt = now, ns.stalledAt(now)
}

// stalledAt is ns.stalled as the next turn will leave it if it comes at
// now: the part beyond nativeStallCounted of a gap still open counts
// already, so a receiver heard in the middle of a stall (the read loop
// runs apart from the session's) gets no credit for the stall before
// its report. Called with ns.mu held.
func (ns *nativeSession) stalledAt(now time.Time) time.Duration {
	if ns.turnAt.IsZero() {
		return ns.stalled
	}
	return ns.stalled + max(0, now.Sub(ns.turnAt)-nativeStallCounted)
}

// silence is how long r has not been heard at now, less the time the
// session did not run since (turn). Called with ns.mu held.
func (ns *nativeSession) silence(r *nativeRecv, now time.Time) time.Duration {
	return now.Sub(r.last) - (ns.stalled - r.stallAt)
}

// measureLoss drops the receivers silent for nativeReceiverTimeout and
// takes the others' loss since the last step, where enough datagrams
// have gone by to say something. It returns one vote per address — the
// least loss among its receivers (they share a path), so fake receivers
// on one machine cannot decide the room's rate — and how many addresses
// have receivers.
func (ns *nativeSession) measureLoss(now time.Time) (losses []int, addrs int) {
	votes := map[netip.Addr]int{}
	for p, r := range ns.receivers {
		if ns.silence(r, now) > nativeReceiverTimeout {
			delete(ns.receivers, p)
			// Remembered (bounded) so that its DONE still counts; a
			// receiver dropped again after coming back counts once.
			if _, again := ns.droppedTok[p]; again {
				ns.droppedTok[p] = r.tok
			} else {
				ns.dropped++
				ns.s.Counters.Dropped.Add(1)
				if len(ns.droppedTok) < maxFinishedRemembered {
					if ns.droppedTok == nil {
						ns.droppedTok = map[netip.AddrPort]token{}
					}
					ns.droppedTok[p] = r.tok
				}
			}
			ns.s.Log.Info().Str("client", p.String()).Str("file", ns.key.name).Msg("mtftp: native receiver silent, dropped")
			continue
		}
		r.informed = false
		if n := r.seen + r.lost; n >= minInformative {
			// Smoothed: loss comes in bursts (a dropped GSO
			// super-datagram is 64 datagrams at once), and one sample
			// of a few hundred says little.
			sample := float64(r.lost*1000) / float64(n)
			if r.lossAvg < 0 {
				r.lossAvg = sample
			} else {
				r.lossAvg = 0.7*r.lossAvg + 0.3*sample
			}
			r.lossPerM = uint16(r.lossAvg)
			r.seen, r.lost, r.informed = 0, 0, true
			if v, ok := votes[p.Addr()]; !ok || int(r.lossPerM) < v {
				votes[p.Addr()] = int(r.lossPerM)
			}
		}
	}
	losses = make([]int, 0, len(votes))
	for _, v := range votes {
		losses = append(losses, v)
	}
	seen := map[netip.Addr]bool{}
	for p := range ns.receivers {
		seen[p.Addr()] = true
	}
	return losses, len(seen)
}

// adjustRate sets the rate from the 90th percentile of losses; it
// reports whether the room is congested.
func (ns *nativeSession) adjustRate(now time.Time, losses []int) (congested bool) {
	slices.Sort(losses)
	p90 := losses[(len(losses)-1)*9/10] // the 90th percentile (the middle one of three): see lossTolerated
	if ns.seq >= ns.dataUntil && len(ns.needOrder) == 0 {
		return false // only a running stream says anything about the rate
	}
	ivl := 3 * ns.nakInterval() // until reports cover a new rate
	if ns.tol == 0 {
		ns.tol = lossTolerated
	}
	// Did the last decrease help? Loss that did not fall with the
	// rate is the link's (random loss), not congestion: tolerate it
	// (repairs cover it) and take the decrease back. The tolerance
	// creeps back down, so a link that stops losing is noticed.
	if !ns.decreased.IsZero() && now.Sub(ns.decreased) >= ivl {
		if p90*4 >= ns.lossAtDecrease*3 {
			ns.tol = min(lossTolMax, p90+lossTolMargin)
			ns.rate /= 0.8
		}
		ns.decreased = time.Time{}
	}
	congested = p90 > ns.tol
	// Multiplicative decrease, at most one per report cycle; increase
	// fast up to just below the rate that last caused congestion,
	// then probe slowly (a bottleneck's queue answers a step late, so
	// overshooting it costs a burst of loss and repairs).
	switch {
	case congested && !ns.decreased.IsZero():
	case congested:
		ns.peak, ns.lossAtDecrease, ns.decreased = ns.rate, p90, now
		ns.rate *= 0.8
	case p90 <= lossClean && ns.rate < 0.9*ns.peak:
		ns.rate = min(ns.rate*1.15, 0.9*ns.peak)
	case p90 <= lossClean && ns.peak == 0:
		ns.rate *= 1.15
	default:
		ns.rate *= 1.02
	}
	ns.tol = max(lossTolerated, ns.tol-1)
	top := ns.maxBps
	if top <= 0 {
		top = nativeMaxAutoRate
	}
	ns.rate = min(top, max(nativeMinRate, ns.rate))
	ns.s.Log.Debug().Str("file", ns.key.name).Int("tier", ns.key.tier).Int("measured", len(losses)).Int("p90_permille", p90).
		Int("tolerated_permille", ns.tol).Bool("congested", congested).Float64("rate_MBps", ns.rate/1e6).Msg("mtftp: native rate")
	return congested
}

// slowReceivers takes out of the session the receivers that reported
// more than lossSlow for slowReports reports in a row while the room is
// not congested (their own link, not the stream, is too slow), for a
// slower tier to take.
func (ns *nativeSession) slowReceivers(congested bool) []*nativeRecv {
	var slow []*nativeRecv
	for p, r := range ns.receivers {
		if r.reports == 0 {
			continue
		}
		r.reports = 0
		switch {
		case !r.informed:
		case r.lossPerM > lossSlow:
			r.slow++
		default:
			r.slow = 0
		}
		if r.slow >= slowReports && !congested && len(ns.receivers) > 1 && ns.key.tier+1 < maxTiers {
			delete(ns.receivers, p)
			if _, was := ns.droppedTok[p]; was { // dropped once, back, now moved: the next tier's
				delete(ns.droppedTok, p)
				ns.dropped--
			}
			slow = append(slow, r)
		}
	}
	return slow
}

// move hands a receiver that cannot keep up to the next tier's session of
// the same file, paced at what it managed to take.
func (ns *nativeSession) move(ctx context.Context, r *nativeRecv) {
	s := ns.s
	key := ns.key
	key.tier++
	// At what it managed, and never faster than this tier: what a
	// receiver reports must not buy it a faster stream.
	ns.mu.Lock()
	rate := min(max(nativeMinRate, float64(r.goodKBps)*1024*0.9), 0.9*ns.rate)
	ns.mu.Unlock()
	s.mu.Lock()
	to := s.natives[key]
	if to == nil && !s.closing {
		f, err := s.Files.Get(key.name)
		if err == nil && f.Size() == key.size && f.ModTime().UnixNano() == key.mtime {
			var reason string
			if to, reason = s.newNative(ctx, key, f, ns.local, rate, StartPolicy{MaxWait: -1}); to == nil {
				f.Release()
				s.Log.Warn().Str("reason", reason).Msg("mtftp: no slower tier")
			}
		} else if err == nil {
			f.Release()
		}
	}
	if to != nil {
		to.join(r.peer, time.Now(), r.partial, r.tok)
	}
	s.mu.Unlock()
	ns.mu.Lock()
	ns.moved++
	ns.mu.Unlock()
	if to == nil {
		// No tier to move to: it stays here rather than being dropped.
		ns.mu.Lock()
		ns.receivers[r.peer] = r
		r.slow = 0
		ns.publish()
		ns.mu.Unlock()
		return
	}
	s.Counters.NativeMoves.Add(1)
	s.Log.Info().Str("client", r.peer.String()).Str("file", key.name).Int("tier", key.tier).
		Float64("rate_MBps", rate/1e6).Uint16("loss_permille", r.lossPerM).Msg("mtftp: slow receiver moved to a slower stream")
	to.movedIn(r.peer, time.Now())
	to.reply(r.peer, flagMove)
}

// empty reports, and makes final, that no receiver is left: a session
// with none ends, and a later request starts a new one.
func (ns *nativeSession) empty() bool {
	s := ns.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.receivers) > 0 {
		return false
	}
	ns.close()
	return true
}

// close takes the session out of the server's table. Called with s.mu and
// ns.mu held.
func (ns *nativeSession) close() {
	if ns.closed {
		return
	}
	ns.closed = true
	if ns.s.natives[ns.key] == ns {
		delete(ns.s.natives, ns.key)
	}
	delete(ns.s.groups, ns.group.Addr())
}

// finish ends the session: receivers still in it are told, the socket is
// closed and one log line says what happened.
func (ns *nativeSession) finish(outcome tftp.Outcome, err error) {
	s := ns.s
	s.mu.Lock()
	ns.mu.Lock()
	left := len(ns.receivers)
	ns.close()
	p := ns.describe(0)
	ns.mu.Unlock()
	s.mu.Unlock()
	if left > 0 {
		b := appendSession(nil, &p)
		ns.send(b)
		ns.send(b)
	}
	s.untrack(ns.view)
	ns.c.Close()
	s.Counters.Active.Add(-1)
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d := time.Since(ns.start)
	s.Log.Info().Str("dialect", "native").Str("file", ns.key.name).Str("group", ns.group.String()).Int("tier", ns.key.tier).
		Int64("size", ns.g.size).Int("receivers", ns.everJoined).Int("completed", ns.completed).Int("failed", ns.failed).
		Int("dropped", ns.dropped).Int("moved", ns.moved).Int("left", left).Int64("passes", ns.passes).
		Int64("data_shards", ns.dataShards).Int64("repair_shards", ns.repairShards).Int64("naks", ns.naks).Int64("repair_rounds", ns.rounds).
		Int64("naks_over_credit", ns.creditDenied).
		Int64("wire_bytes", ns.wire.Load()).Float64("wire_ratio", float64(ns.wire.Load())/float64(max(1, ns.g.size))).
		Float64("rate_MBps", ns.rate/1e6).Dur("duration", d).Str("outcome", string(outcome)).Err(err).Msg("mtftp: native session")
}

// release lets the file go, once the stream and the digest are done.
func (ns *nativeSession) release() { ns.file.Release() }

// readLoop takes the receivers' packets until the socket closes.
func (ns *nativeSession) readLoop() {
	var st statusPkt
	readEach(ns.c, 2048, func(b []byte, from netip.AddrPort) { ns.report(b, from, &st) })
}

// report handles one receiver packet: a STATUS, a WANT (acknowledged) or
// a DONE. st is the reader's reused STATUS.
func (ns *nativeSession) report(b []byte, from netip.AddrPort, st *statusPkt) {
	s := ns.s
	switch nativeOp(b) {
	case opNativeStatus:
		if err := parseStatus(b, st); err != nil || st.ID != ns.id {
			s.Counters.BadPacket.Add(1)
			return
		}
		if !ns.status(from, st) {
			s.Counters.UnknownPeer.Add(1)
		}
	case opNativeWant:
		p, err := parseWant(b)
		if err != nil || p.ID != ns.id {
			s.Counters.BadPacket.Add(1)
			return
		}
		at, ok := ns.want(from, &p)
		if !ok {
			s.Counters.UnknownPeer.Add(1)
			return
		}
		ack := wantAckPkt{ID: ns.id, First: p.First, Count: p.Count, From: at}
		if err := ns.c.WriteTo(appendWantAck(nil, &ack), from); err != nil {
			s.Counters.SendErrors.Add(1)
		}
	case opNativeDone:
		id, tok, ok, err := parseDone(b)
		if err != nil || id != ns.id {
			s.Counters.BadPacket.Add(1)
			return
		}
		ns.done(from, tok, ok)
	default:
		s.Counters.BadPacket.Add(1)
	}
}

// status records a receiver's report and queues its NAKs: a stripe's
// repair count is the largest any receiver still misses, so one repair
// round serves them all.
func (ns *nativeSession) status(from netip.AddrPort, st *statusPkt) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	r := ns.receivers[from]
	if r == nil {
		return false
	}
	if !hmac.Equal(st.Token[:], r.tok[:]) {
		ns.s.Counters.NativeBadToken.Add(1)
		return true
	}
	ns.heard(r, time.Now())
	r.goodKBps, r.complete = st.GoodKBps, st.Complete
	r.seen += uint64(st.Seen)
	r.lost += uint64(st.Lost)
	r.reports++
	c := ns.credits[from.Addr()]
	if c == nil { // a receiver moved here keeps its address's standing
		c = &addrCredit{lastSent: ns.dataShards + ns.repairShards}
		ns.credits[from.Addr()] = c
	}
	sent := ns.dataShards + ns.repairShards
	c.twentieths = min(c.twentieths+20*int64(st.Lost)+(sent-c.lastSent), 20*max(ns.g.blocks, int64(ns.g.k)*nativeInterleave))
	c.lastSent = sent
	queued := false
	now := r.last
	ivl := ns.nakInterval()
	for _, k := range st.Naks {
		s := int64(k.Stripe)
		if s >= ns.g.stripes || k.Missing == 0 {
			continue
		}
		want := min(int(k.Missing), ns.g.k)
		ns.naks++
		if m, ok := ns.repaired[s]; ok && now.Sub(m.at) < 2*ivl && want <= m.count {
			continue // asked before the last repair could arrive
		}
		if want = int(min(int64(want), c.twentieths/20)); want <= 0 {
			ns.creditDenied++
			continue // more than it ever reported losing
		}
		c.twentieths -= 20 * int64(want)
		req := ns.need[s]
		if req != nil && req.started {
			// Its round is going out now: the shards still to come count
			// toward this NAK; ask for the rest after.
			continue
		}
		if req == nil {
			req = &repairReq{due: now.Add(ivl)}
			ns.need[s] = req
			ns.needOrder = append(ns.needOrder, s)
			queued = true
		}
		req.count = max(req.count, want)
		req.lacks |= k.Lacks & (1<<ns.g.dataIn(s) - 1)
	}
	if len(st.Naks) > 0 {
		ns.s.Counters.NativeNaks.Add(uint64(len(st.Naks)))
	}
	if queued {
		ns.idle = false
		ns.poke()
	}
	return true
}

// done counts a receiver's DONE (its token checked) and acknowledges
// it, also when it comes again (the acknowledgement was lost). A receiver
// dropped as silent that finishes anyway (from its socket buffer, after a
// stall of its own) is counted completed, not dropped: its DONE carries
// its token. The acknowledgement leaves before the session is woken: the
// last DONE ends the session and closes its socket.
func (ns *nativeSession) done(from netip.AddrPort, tok token, ok bool) {
	ns.mu.Lock()
	r, in := ns.receivers[from]
	if !in {
		if t, was := ns.droppedTok[from]; was && hmac.Equal(tok[:], t[:]) {
			if ns.closed {
				// The session is ending: its summary is written or
				// being written. The answer still goes.
				ns.mu.Unlock()
				ns.ackDone(from)
				return
			}
			ns.s.Log.Info().Str("client", from.String()).Str("file", ns.key.name).Bool("ok", ok).
				Msg("mtftp: native receiver dropped as silent finished after all")
			ns.count(from, tok, ok)
			return
		}
		t, was := ns.finished[from]
		ns.mu.Unlock()
		if was && hmac.Equal(tok[:], t[:]) {
			ns.ackDone(from)
		}
		return
	}
	if !hmac.Equal(tok[:], r.tok[:]) {
		ns.mu.Unlock()
		ns.s.Counters.NativeBadToken.Add(1)
		return
	}
	delete(ns.receivers, from)
	ns.count(from, tok, ok)
}

// count records a receiver's DONE, taken out of the session, and
// acknowledges it; one dropped earlier (and back since, or not) is no
// longer counted dropped. Called with ns.mu held; it unlocks.
func (ns *nativeSession) count(from netip.AddrPort, tok token, ok bool) {
	if _, was := ns.droppedTok[from]; was {
		delete(ns.droppedTok, from)
		ns.dropped--
	}
	if len(ns.finished) < maxFinishedRemembered {
		if ns.finished == nil {
			ns.finished = map[netip.AddrPort]token{}
		}
		ns.finished[from] = tok
	}
	ns.publish()
	if ok {
		ns.completed++
		ns.s.Counters.NativeCompleted.Add(1)
	} else {
		ns.failed++
		ns.s.Counters.Aborted.Add(1)
	}
	ns.mu.Unlock()
	ns.ackDone(from)
	ns.poke()
}

func (ns *nativeSession) ackDone(to netip.AddrPort) {
	if err := ns.c.WriteTo(appendDoneAck(nil, ns.id), to); err != nil {
		ns.s.Counters.SendErrors.Add(1)
	}
}

// maxFinishedRemembered bounds the receivers a session remembers as done
// (to acknowledge a repeated DONE): at most this many entries of 40 bytes
// or so, however many receivers a long session sees.
const maxFinishedRemembered = 4096

// digest computes the file's SHA-256 for the receivers' final check,
// once per file version (sessions of other tiers reuse it).
func (ns *nativeSession) digest() {
	var sum [32]byte
	if filestore.ReadMapped(func() { sum = sha256.Sum256(ns.data) }) != nil {
		return // truncated: the stream fails on it too
	}
	ns.s.storeSHA(ns.key, sum)
	ns.mu.Lock()
	ns.sha, ns.shaOK = sum, true
	ns.mu.Unlock()
}

func (s *Server) cachedSHA(k nativeKey) ([32]byte, bool) {
	k.tier, k.shard = 0, 0
	s.shaMu.Lock()
	defer s.shaMu.Unlock()
	sum, ok := s.shas[k]
	return sum, ok
}

func (s *Server) storeSHA(k nativeKey, sum [32]byte) {
	k.tier, k.shard = 0, 0
	s.shaMu.Lock()
	defer s.shaMu.Unlock()
	if s.shas == nil || len(s.shas) > 1024 {
		s.shas = map[nativeKey][32]byte{} // a bounded cache: forget everything rather than grow
	}
	s.shas[k] = sum
}

// nativeUDP adapts a udpio.Conn to nativeConn.
type nativeUDP struct{ *udpio.Conn }

func (c nativeUDP) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, from, _, err := c.Conn.ReadFrom(b)
	return n, from, err
}

func (c nativeUDP) WriteTo(b []byte, dst netip.AddrPort) error {
	return c.Conn.WriteTo(b, dst, netip.Addr{})
}

// dialNativeUDP opens a native session socket: an ephemeral port on local,
// set up for multicast and batched sends.
func (s *Server) dialNativeUDP(local netip.Addr) (nativeConn, error) {
	uc, err := s.sessionSocket(local)
	if err != nil {
		return nil, err
	}
	// A send buffer smaller than a shaped egress queue (tbf's, a few
	// hundred KB) makes the socket block before the queue overflows:
	// local backpressure instead of loss and repairs.
	c, err := udpio.New(uc, udpio.Options{SndBuf: 512 << 10, RcvBuf: 1 << 20})
	if err != nil {
		uc.Close()
		return nil, err
	}
	return nativeUDP{c}, nil
}
