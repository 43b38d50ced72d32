package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/tftp"
)

// The batch engine (TFTPSwarm.Engine = EngineBatch) plays lock-step
// clients at a small fraction of the server's CPU cost per block, so that
// on a machine shared with the server the swarm does not set the pace:
// with the client's cost C per block beside the server's S, two servers'
// throughputs compare as about (S_a + C)/(S_b + C), squeezed towards 1
// when C is near S (docs/benchmarks.md, "The batch engine").
//
// Clients do not own sockets or goroutines. The swarm opens S sockets
// (batchSockets), each bound to 0.0.0.0 and an ephemeral port, with
// IP_PKTINFO. Client i belongs to socket i mod S; each of its downloads
// takes a slot of that socket: the least recently used source address no
// other download of the socket holds (set per datagram with IP_PKTINFO).
// So every running download is one distinct (local address, local port)
// pair, and an incoming datagram belongs to the download holding the
// slot of its socket and destination address. A socket has at least
// twice as many addresses as clients, so a client's next download comes
// from another pair than its last (a server may still hold that
// session). With fewer than two source addresses each client has a
// socket of its own, opened anew for each download, and the kernel picks
// the address unless one was given.
//
// One event loop per socket reads up to batchRead datagrams with one
// recvmmsg, handles each (RRQ sent, then OACK, DATA or ERROR), and sends
// every ACK (and RRQ) that resulted with one sendmmsg. Deadlines
// (retransmission, the ramp's starts) are checked every batchTick, with
// tftp.Client's timer: the first RTO, then doubling (internal/rto), and
// Retries consecutive timeouts at most.
//
// Limits: lock-step (windowsize 1) IPv4 downloads only, no tsize probe,
// and at most 8 clients per source address (16 sockets, each with twice
// as many addresses as clients).

// batchSupported: Linux has what the batch engine needs.
const batchSupported = true

// batchDrop, if set (tests only, before a swarm runs), drops datagrams
// the batch engine receives: client is the simulated client's index.
var batchDrop func(client int, pkt []byte) bool

const (
	// batchRead is the datagrams one recvmmsg reads at most.
	batchRead = 64
	// batchTick is how often a loop checks its clients' deadlines:
	// retransmission timeouts are at least 20 ms (tftp.Client's floor), so
	// 10 ms keeps them within half of their shortest.
	batchTick = 10 * time.Millisecond
	// batchRcvBuf, batchSndBuf: a socket's queues hold one block per
	// lock-step client, 256 of them, with room for the kernel's overhead.
	batchRcvBuf = 4 << 20
	batchSndBuf = 1 << 20
	// clientRTOFloor and clientRTOMax are tftp.Client's timer bounds.
	clientRTOFloor = 20 * time.Millisecond
	clientRTOMax   = 10 * time.Second
)

// batchPhase is where a batch client is.
type batchPhase uint8

const (
	phaseIdle    batchPhase = iota // waiting for its (ramp) start
	phaseRequest                   // RRQ sent, the server has not answered
	phaseData                      // the server answered: receiving
	phaseDone                      // no download left
)

// batchClient is one simulated client of the batch engine: one download
// at a time, lock-step.
type batchClient struct {
	id      int
	slot    int // the slot of the running download, -1 between downloads
	src     netip.Addr
	phase   batchPhase
	left    int // downloads still to begin
	startAt time.Time
	t0      time.Time // the download's first request

	peer     netip.AddrPort // the server's TID, learned from its first reply
	have     uint64         // blocks received in order
	blksize  int
	rollover uint16 // the block number after 65535 (0, or 1: tftp-hpa's rollover=1)
	oack     bool
	dupAcked bool // the last block's duplicate was answered (once per block)
	res      tftp.GetResult

	est      rto.Estimator
	sentAt   time.Time
	deadline time.Time
	timeouts int  // consecutive
	sampled  bool // a round trip was measured (once per download: Karn)

	h   hash.Hash // nil without SHA256
	ack [tftp.HeaderLen]byte
}

// batchSlot is one source address of a socket: held by one download at
// a time.
type batchSlot struct {
	addr   netip.Addr // invalid: the kernel's
	holder int        // the loop's client number holding it, -1 if free
	// The last download's server TID and final block, to ACK again if
	// the server repeats that block (our final ACK was lost).
	prevPeer netip.AddrPort
	lastWire uint16
}

// batchLoop is one socket and its clients (client k of the loop is the
// swarm's client k×S + socket).
type batchLoop struct {
	r       *swarmRun
	ctx     context.Context
	conn    *udpio.Conn
	target  netip.AddrPort
	rrq     []byte
	errTID  []byte
	errStop []byte
	// addrIdx maps a destination address to its slot; nil with one slot.
	addrIdx map[netip.Addr]int
	slots   []batchSlot
	// free holds the free slots, least recently used first: a ring of
	// nfree from freeAt.
	free          []int
	freeAt, nfree int
	// reopen: a new socket for each download (one slot, one client).
	reopen  bool
	begun   int
	connMu  sync.Mutex // conn, replaced by reopen, against ctx's AfterFunc
	clients []batchClient
	running int // clients not done
	retries int
	initial time.Duration

	bufs      [][]byte
	pkts      []udpio.Packet
	out       []udpio.Message
	outClient []int  // the loop's client number of out[i], -1 for none
	acks      []byte // ACKs sent for no download (dally), until the flush
	liveBytes int64
}

// runBatch plays the swarm with the batch engine; it fails only when the
// target or the sockets cannot be had.
func (r *swarmRun) runBatch(ctx context.Context, start time.Time) error {
	c := r.c
	ua, err := net.ResolveUDPAddr("udp4", c.Target)
	if err != nil {
		return fmt.Errorf("bench: %s engine: target %s: %w (IPv4 only)", EngineBatch, c.Target, err)
	}
	target := ua.AddrPort()
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	nsock := batchSockets(c.Clients, len(c.SourceAddrs))
	var addrIdx map[netip.Addr]int
	if len(c.SourceAddrs) >= 2 {
		addrIdx = make(map[netip.Addr]int)
		for k, a := range c.SourceAddrs {
			addrIdx[a.Unmap()] = k
		}
	}
	loops := make([]*batchLoop, 0, nsock)
	defer func() {
		for _, l := range loops {
			l.conn.Close()
		}
	}()
	for s := range nsock {
		conn, err := openBatchSocket()
		if err != nil {
			return fmt.Errorf("bench: %s engine: socket %d of %d: %w", EngineBatch, s+1, nsock, err)
		}
		loops = append(loops, newBatchLoop(ctx, r, conn, target, addrIdx, s, nsock))
	}
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Go(func() { l.run(start) })
	}
	wg.Wait()
	return nil
}

// openBatchSocket opens a socket on 0.0.0.0 and an ephemeral port that
// reads the destination address of each datagram.
func openBatchSocket() (*udpio.Conn, error) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return nil, err
	}
	conn, err := udpio.New(uc, udpio.Options{Pktinfo: true, RcvBuf: batchRcvBuf, SndBuf: batchSndBuf})
	if err != nil {
		uc.Close()
		return nil, err
	}
	return conn, nil
}

// newBatchLoop sets up socket s of nsock with its clients and slots.
func newBatchLoop(ctx context.Context, r *swarmRun, conn *udpio.Conn, target netip.AddrPort, addrIdx map[netip.Addr]int, s, nsock int) *batchLoop {
	c := r.c
	req := tftp.Request{Op: tftp.OpRRQ, Filename: c.File, Mode: "octet"}
	if c.Profile.BlockSize > 0 {
		req.Options = append(req.Options, tftp.Option{Name: tftp.OptBlockSize, Value: strconv.Itoa(c.Profile.BlockSize)})
	}
	if c.Profile.WindowSize > 0 {
		req.Options = append(req.Options, tftp.Option{Name: tftp.OptWindowSize, Value: strconv.Itoa(c.Profile.WindowSize)})
	}
	if c.Profile.TSize {
		req.Options = append(req.Options, tftp.Option{Name: tftp.OptTransferSz, Value: "0"})
	}
	l := &batchLoop{
		r: r, ctx: ctx, conn: conn, target: target, addrIdx: addrIdx, rrq: req.Marshal(nil),
		errTID:  tftp.AppendError(nil, tftp.ErrCodeUnknownTID, "unknown transfer ID"),
		errStop: tftp.AppendError(nil, tftp.ErrCodeUndefined, "cancelled"),
		retries: c.Retries, initial: c.Timeout,
	}
	if l.retries <= 0 {
		l.retries = tftp.DefaultRetries
	}
	if l.initial <= 0 {
		l.initial = time.Second
	}
	for i := s; i < c.Clients; i += nsock {
		cl := batchClient{id: i, slot: -1, left: c.Transfers}
		if c.SHA256 != nil {
			cl.h = sha256.New()
		}
		l.clients = append(l.clients, cl)
	}
	switch {
	case addrIdx != nil:
		for _, a := range c.SourceAddrs {
			l.slots = append(l.slots, batchSlot{addr: a.Unmap(), holder: -1})
		}
	case len(c.SourceAddrs) == 1:
		l.slots = []batchSlot{{addr: c.SourceAddrs[0].Unmap(), holder: -1}}
	default:
		l.slots = []batchSlot{{holder: -1}}
	}
	l.reopen = len(l.slots) == 1
	for k := range l.slots {
		l.free = append(l.free, k)
	}
	l.nfree = len(l.free)
	l.running = len(l.clients)
	bufLen := max(c.Profile.BlockSize, tftp.DefaultBlockSize) + tftp.HeaderLen + 1 // +1: a longer block shows
	l.bufs = make([][]byte, batchRead)
	for i := range l.bufs {
		l.bufs[i] = make([]byte, bufLen)
	}
	l.pkts = make([]udpio.Packet, batchRead)
	// Room for an answer to every datagram read and a timeout of every
	// client before a flush.
	l.out = make([]udpio.Message, 0, batchRead+len(l.clients))
	l.outClient = make([]int, 0, cap(l.out))
	l.acks = make([]byte, 0, batchRead*tftp.HeaderLen)
	return l
}

// run is the loop: read a batch, handle it, check deadlines every
// batchTick, send what resulted; until every client is done or ctx ends.
func (l *batchLoop) run(start time.Time) {
	stop := context.AfterFunc(l.ctx, func() {
		l.connMu.Lock()
		l.conn.SetReadDeadline(time.Unix(1, 0))
		l.connMu.Unlock()
	})
	defer stop()
	for i := range l.clients {
		l.clients[i].startAt = l.r.c.startAt(start, l.clients[i].id)
	}
	now := time.Now()
	l.scan(now)
	l.flush()
	next := now.Add(batchTick)
	l.conn.SetReadDeadline(next)
	for l.running > 0 {
		if l.ctx.Err() != nil {
			l.cancel(time.Now())
			break
		}
		n, err := l.conn.ReadBatch(l.bufs, l.pkts)
		now = time.Now()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.failAll(now, err)
			break
		}
		for _, p := range l.pkts[:n] {
			l.packet(p, now)
		}
		if !now.Before(next) {
			l.scan(now)
			next = now.Add(batchTick)
			l.conn.SetReadDeadline(next)
		}
		l.flush()
	}
	l.flush()
	l.r.live.Bytes.Add(l.liveBytes)
}

// scan starts the clients whose time has come and answers the
// retransmission timeouts that passed.
func (l *batchLoop) scan(now time.Time) {
	for k := range l.clients {
		cl := &l.clients[k]
		switch cl.phase {
		case phaseIdle:
			if !now.Before(cl.startAt) {
				l.begin(k, now)
			}
		case phaseRequest, phaseData:
			if !now.Before(cl.deadline) {
				l.onTimeout(k, now)
			}
		}
	}
}

// begin starts client k's next download, or ends the client.
func (l *batchLoop) begin(k int, now time.Time) {
	cl := &l.clients[k]
	if cl.left == 0 || l.ctx.Err() != nil {
		cl.phase = phaseDone
		l.running--
		return
	}
	if l.reopen && l.begun > 0 && !l.newSocket(k, now) {
		return
	}
	l.begun++
	cl.left--
	l.r.begin()
	// A free slot is there: a loop has at least as many as clients.
	cl.slot = l.free[l.freeAt]
	l.freeAt, l.nfree = (l.freeAt+1)%len(l.free), l.nfree-1
	l.slots[cl.slot].holder = k
	cl.src = l.slots[cl.slot].addr
	cl.phase, cl.t0 = phaseRequest, now
	cl.peer, cl.have, cl.blksize, cl.rollover = netip.AddrPort{}, 0, tftp.DefaultBlockSize, 0
	cl.oack, cl.dupAcked, cl.timeouts, cl.sampled = false, false, 0, false
	cl.res = tftp.GetResult{TSize: -1, BlockSize: tftp.DefaultBlockSize, WindowSize: 1}
	cl.est = rto.New(l.initial, clientRTOFloor, clientRTOMax)
	if cl.h != nil {
		cl.h.Reset()
	}
	l.send(k, l.target, l.rrq, now)
}

// newSocket replaces the loop's socket for client k's next download (a
// loop with one slot: a new port is a new TID). If none can be had, the
// client ends with the error.
func (l *batchLoop) newSocket(k int, now time.Time) bool {
	l.flush()
	conn, err := openBatchSocket()
	if err != nil {
		l.r.begin()
		l.r.record(tftp.GetResult{}, 0, fmt.Errorf("bench: %s engine: new socket: %w", EngineBatch, err), false)
		l.clients[k].phase = phaseDone
		l.running--
		return false
	}
	l.connMu.Lock()
	old := l.conn
	l.conn = conn
	l.connMu.Unlock()
	old.Close()
	if l.ctx.Err() != nil {
		conn.SetReadDeadline(time.Unix(1, 0))
	} else {
		conn.SetReadDeadline(now.Add(batchTick))
	}
	return true
}

// packet routes one datagram to its download: from the target's address
// only, to the holder of the slot of the address it came to.
func (l *batchLoop) packet(p udpio.Packet, now time.Time) {
	if p.Src.Addr().Unmap() != l.target.Addr() {
		return // not our server
	}
	slot := 0
	if l.addrIdx != nil {
		var ok bool
		if slot, ok = l.addrIdx[p.Dst.Unmap()]; !ok {
			return
		}
	}
	src := netip.AddrPortFrom(p.Src.Addr().Unmap(), p.Src.Port())
	sl := &l.slots[slot]
	k := sl.holder
	if k < 0 || l.clients[k].phase == phaseDone {
		l.dally(sl, src, p.Data)
		return
	}
	cl := &l.clients[k]
	if batchDrop != nil && batchDrop(cl.id, p.Data) {
		return
	}
	switch {
	case cl.peer.IsValid() && src != cl.peer:
		// Another transfer's TID: ERROR 5 to it, the transfer goes on
		// (RFC 1350 §4).
		l.queue(-1, src, l.errTID, cl.src)
		return
	case !cl.peer.IsValid() && src == sl.prevPeer && src.Port() != l.target.Port():
		// The slot's previous download's server session, still sending.
		l.dally(sl, src, p.Data)
		return
	case !cl.peer.IsValid():
		cl.peer, cl.res.ServerAddr = src, src
		cl.phase = phaseData
	}
	switch tftp.PacketOpcode(p.Data) {
	case tftp.OpOACK:
		l.onOACK(k, p.Data, now)
	case tftp.OpDATA:
		l.onData(k, p.Data, now)
	case tftp.OpERROR:
		code, msg, _ := tftp.ParseError(p.Data)
		l.end(k, now, &tftp.RemoteError{Code: code, Message: msg})
	}
}

// dally answers the server of a slot's last download, which repeats the
// final block when the final ACK was lost: ACK it again.
func (l *batchLoop) dally(sl *batchSlot, src netip.AddrPort, pkt []byte) {
	if src != sl.prevPeer || tftp.PacketOpcode(pkt) != tftp.OpDATA {
		return
	}
	if wire, _, err := tftp.ParseData(pkt); err == nil && wire == sl.lastWire {
		l.queue(-1, src, l.ackOf(sl.lastWire), sl.addr)
	}
}

// ackOf is an ACK of wire, in a buffer of the loop's that stays valid
// until the next flush (acks: one per datagram read at most).
func (l *batchLoop) ackOf(wire uint16) []byte {
	if len(l.acks)+tftp.HeaderLen > cap(l.acks) {
		l.flush()
	}
	l.acks = tftp.AppendAck(l.acks, wire)
	return l.acks[len(l.acks)-tftp.HeaderLen:]
}

// onOACK takes the server's OACK and starts the transfer with ACK 0
// (tftp.Client's rules: a repeated OACK is answered at once, a stale one
// behind data ignored).
func (l *batchLoop) onOACK(k int, pkt []byte, now time.Time) {
	cl := &l.clients[k]
	switch {
	case cl.have > 0:
		return
	case cl.oack:
		l.sendAck(k, now)
		return
	}
	opts, err := tftp.ParseOACK(pkt)
	if err == nil {
		err = l.applyOACK(cl, opts)
	}
	if err != nil {
		l.queue(-1, cl.peer, tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "bad OACK"), cl.src)
		l.end(k, now, fmt.Errorf("tftp: %s: bad OACK from %s: %w", l.r.c.File, cl.peer, err))
		return
	}
	cl.oack = true
	l.sample(cl, now)
	cl.timeouts = 0
	l.sendAck(k, now)
}

// applyOACK checks the options granted against those asked (a server may
// lower blksize and windowsize, never raise them; RFC 2347/2348/7440).
func (l *batchLoop) applyOACK(cl *batchClient, opts []tftp.Option) error {
	p := l.r.c.Profile
	for _, o := range opts {
		v, err := strconv.ParseInt(o.Value, 10, 64)
		switch strings.ToLower(o.Name) {
		case tftp.OptBlockSize:
			if err != nil || p.BlockSize == 0 || v < tftp.MinBlockSize || v > int64(p.BlockSize) {
				return fmt.Errorf("blksize %q to %d", o.Value, p.BlockSize)
			}
			cl.blksize, cl.res.BlockSize = int(v), int(v)
		case tftp.OptWindowSize:
			if err != nil || p.WindowSize == 0 || v < 1 || v > int64(p.WindowSize) {
				return fmt.Errorf("windowsize %q to %d", o.Value, p.WindowSize)
			}
			cl.res.WindowSize = int(v)
		case tftp.OptTransferSz:
			if err != nil || v < 0 {
				return fmt.Errorf("tsize %q", o.Value)
			}
			cl.res.TSize = v
		case tftp.OptRollover:
			if o.Value == "1" {
				cl.rollover = 1
			}
		}
	}
	return nil
}

// onData takes a DATA block, lock-step: the next block is delivered and
// ACKed; a repeat of the last one is ACKed again once (our ACK was lost),
// any other block ignored.
func (l *batchLoop) onData(k int, pkt []byte, now time.Time) {
	cl := &l.clients[k]
	wire, payload, err := tftp.ParseData(pkt)
	if err != nil || len(payload) > cl.blksize {
		return // not a DATA of this transfer
	}
	if wire != wireBlock(cl.have+1, cl.rollover) {
		cl.res.Duplicates++
		if !cl.dupAcked {
			cl.dupAcked = true
			l.sendAck(k, now)
		}
		return
	}
	l.sample(cl, now)
	cl.have++
	cl.dupAcked, cl.timeouts = false, 0
	cl.est.Progress()
	cl.res.Bytes += int64(len(payload))
	cl.res.Blocks = cl.have
	l.liveBytes += int64(len(payload))
	if cl.h != nil {
		cl.h.Write(payload)
	}
	l.sendAck(k, now)
	if len(payload) < cl.blksize {
		l.end(k, now, nil)
	}
}

// wireBlock is block number n on the wire: modulo 2^16, or after 65535
// back to 1 with rollover 1.
func wireBlock(n uint64, rollover uint16) uint16 {
	if rollover == 1 && n > 0 {
		return uint16((n-1)%65535 + 1)
	}
	return uint16(n)
}

// sample measures the round trip once per download, and only when
// nothing was resent (Karn), as tftp.Client does.
func (l *batchLoop) sample(cl *batchClient, now time.Time) {
	if !cl.sampled && cl.timeouts == 0 {
		cl.est.Sample(now.Sub(cl.sentAt))
		cl.sampled = true
	}
}

// onTimeout answers a retransmission timeout: give up after Retries in a
// row, else repeat the request, or the ACK of the last block held.
func (l *batchLoop) onTimeout(k int, now time.Time) {
	cl := &l.clients[k]
	cl.res.Timeouts++
	if cl.timeouts++; cl.timeouts > l.retries {
		l.end(k, now, fmt.Errorf("tftp: %s: %w from %s after %d retries", l.r.c.File, tftp.ErrNoAnswer, l.target, l.retries))
		return
	}
	cl.est.Timeout()
	if cl.peer.IsValid() && (cl.have > 0 || cl.oack) {
		l.sendAck(k, now)
		return
	}
	to := cl.peer
	if !to.IsValid() {
		to = l.target
	}
	l.send(k, to, l.rrq, now)
}

// end records client k's download (err nil: it completed; then it is
// checked) and begins the next.
func (l *batchLoop) end(k int, now time.Time, err error) {
	cl := &l.clients[k]
	if err == nil {
		err = l.r.check(cl.res.Bytes, cl.res.TSize, cl.h)
	}
	l.r.record(cl.res, now.Sub(cl.t0), err, false)
	l.release(cl)
	cl.phase = phaseIdle
	l.begin(k, now)
}

// release frees the slot of cl's download, which has ended: last in the
// queue of free slots.
func (l *batchLoop) release(cl *batchClient) {
	sl := &l.slots[cl.slot]
	sl.prevPeer, sl.lastWire, sl.holder = cl.peer, wireBlock(cl.have, cl.rollover), -1
	l.free[(l.freeAt+l.nfree)%len(l.free)] = cl.slot
	l.nfree++
	cl.slot = -1
}

// cancel ends the downloads running when ctx ends: each server is told
// (ERROR 0), each download counted as cancelled.
func (l *batchLoop) cancel(now time.Time) {
	for k := range l.clients {
		cl := &l.clients[k]
		if cl.phase == phaseRequest || cl.phase == phaseData {
			if cl.peer.IsValid() {
				l.queue(-1, cl.peer, l.errStop, cl.src)
			}
			l.r.record(cl.res, now.Sub(cl.t0), l.ctx.Err(), true)
		}
		cl.phase = phaseDone
	}
	l.running = 0
}

// failAll ends every running download with err: the socket failed.
func (l *batchLoop) failAll(now time.Time, err error) {
	for k := range l.clients {
		cl := &l.clients[k]
		if cl.phase == phaseRequest || cl.phase == phaseData {
			l.r.record(cl.res, now.Sub(cl.t0), err, l.ctx.Err() != nil)
		}
		cl.phase = phaseDone
	}
	l.running = 0
}

// sendAck sends client k's ACK of the last block held in order.
func (l *batchLoop) sendAck(k int, now time.Time) {
	cl := &l.clients[k]
	l.send(k, cl.peer, tftp.AppendAck(cl.ack[:0], wireBlock(cl.have, cl.rollover)), now)
}

// send queues client k's packet b to dst and arms its timer.
func (l *batchLoop) send(k int, dst netip.AddrPort, b []byte, now time.Time) {
	cl := &l.clients[k]
	cl.sentAt = now
	cl.deadline = now.Add(cl.est.RTO())
	l.queue(k, dst, b, cl.src)
}

// queue adds a datagram to the next sendmmsg; k is the loop's client
// number it is for, -1 for none.
func (l *batchLoop) queue(k int, dst netip.AddrPort, b []byte, src netip.Addr) {
	if len(l.out) == cap(l.out) {
		l.flush()
	}
	l.out = append(l.out, udpio.Message{Dst: dst, Src: src, Datagram: udpio.Datagram{Hdr: b}})
	l.outClient = append(l.outClient, k)
}

// flush sends the queued datagrams. A datagram the kernel has no room
// for is lost like one on the wire (the client's timer repeats it); any
// other refusal fails its client's download.
func (l *batchLoop) flush() {
	if l.conn == nil { // tests of the per-datagram steps
		l.out, l.outClient, l.acks = l.out[:0], l.outClient[:0], l.acks[:0]
		return
	}
	for i := 0; i < len(l.out); {
		sent, _, err := l.conn.WriteMessages(l.out[i:])
		i += sent
		if err == nil {
			break
		}
		if k := l.outClient[i]; k >= 0 && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.ENOBUFS) {
			if cl := &l.clients[k]; cl.phase == phaseRequest || cl.phase == phaseData {
				l.r.record(cl.res, time.Since(cl.t0), err, false)
				l.release(cl)
				cl.phase = phaseDone
				l.running--
			}
		}
		i++ // skip the datagram refused
	}
	l.r.live.Bytes.Add(l.liveBytes)
	l.liveBytes = 0
	l.out, l.outClient, l.acks = l.out[:0], l.outClient[:0], l.acks[:0]
}
