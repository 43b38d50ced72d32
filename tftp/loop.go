package tftp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// Single-port mode (docs/design.md, "Single-port mode"): every read
// transfer is answered from the listening port, and each listening socket
// (one per core, SO_REUSEPORT: the kernel hashes each client address and
// port to one of them) has one event loop that reads the ACKs of all its
// transfers with one recvmmsg and sends their next blocks with one
// sendmmsg to many destinations. A transfer is a state machine keyed by
// its client's address and port, driven by the same pure sender state
// (window, readSession's protocol steps) as a transfer with its own
// goroutine, under a timer wheel instead of a read deadline. Admission
// (rate limit, unconfirmed pool, session limits), negotiation, logs,
// counters and outcomes are the goroutine mode's. A datagram from an
// address and port with no transfer that is not a request is dropped
// without a reply: its sender has proven nothing.

// loopConn is an event loop's edge to the network: a listening
// udpio.Conn in production, an in-memory network in the virtual-time
// tests.
type loopConn interface {
	// ReadBatch reads at least one datagram (blocking until the read
	// deadline) into bufs; see udpio.Conn.ReadBatch.
	ReadBatch(bufs [][]byte, out []udpio.Packet) (int, error)
	SetReadDeadline(t time.Time) error
	// WriteMessages sends datagrams to many destinations; see
	// udpio.Conn.WriteMessages.
	WriteMessages(ms []udpio.Message) (sent, syscalls int, err error)
	Close() error
}

const (
	// loopBatch is how many datagrams one read takes: an ACK from each of
	// 64 lock-step clients, then one sendmmsg answers them all.
	loopBatch = 64
	// loopBufSize holds any request (at most 512 bytes, RFC 1350 §5 as
	// ParseRequest bounds it), ACK or ERROR; a longer datagram is cut
	// and then refused.
	loopBufSize = 2048
	// loopIdle is the read deadline with no timer armed; wake-ups
	// (shutdown, eviction) move the deadline into the past.
	loopIdle = time.Second
)

// batch's bit set holds one read.
var _ [64 - loopBatch]struct{}

// loop serves the transfers whose clients the kernel hashes to one
// listening socket. Only its goroutine touches it, except cancelled and
// woken (any goroutine, through cancel and wake).
type loop struct {
	s        *Server
	c        loopConn
	sessions map[netip.AddrPort]*loopSession
	wheel    timerWheel
	bufs     [][]byte
	pkts     []udpio.Packet
	// Sends of this round, flushed in one WriteMessages; headers and
	// small packets are copied into arena (payloads stay in the file's
	// mapping). spare and spareArena are the other pair, swapped in while
	// a flush runs.
	out, spare        []queuedSend
	arena, spareArena []byte
	msgs              []udpio.Message
	ended             []*loopSession // finished; released after the flush
	due               []*loopSession // expire's scratch
	round             uint64         // flushes so far

	mu        sync.Mutex
	cancelled []*loopSession // their context ended: evicted or shut down
	woken     atomic.Bool
	deadline  time.Time // the read deadline last set
	deferred  int       // full batches in a row read before running the timers
}

// maxDeferredExpiry bounds how many full batches (64 datagrams each) may
// be read before the timers run: 8 × 64 = 512 answers, a boot storm's
// worth of clients (docs/protocols.md §1.7).
const maxDeferredExpiry = 8

// queuedSend is one datagram of a round: arena[off:off+n] then payload.
type queuedSend struct {
	ls      *loopSession // nil: a reply to a request
	dst     netip.AddrPort
	src     netip.Addr
	off, n  int
	payload []byte
}

func newLoop(s *Server, c loopConn) *loop {
	l := &loop{s: s, c: c, sessions: make(map[netip.AddrPort]*loopSession),
		bufs: make([][]byte, loopBatch), pkts: make([]udpio.Packet, loopBatch)}
	for i := range l.bufs {
		l.bufs[i] = make([]byte, loopBufSize)
	}
	return l
}

// loopSession is one read transfer in an event loop.
type loopSession struct {
	rs    readSession
	res   result
	wait  sessionWait
	sl    *slot
	req   *Request
	peer  netip.AddrPort
	local netip.Addr
	file  servedFile
	live  *live
	stop  func() bool // stops the context watch (cancel)
	ended bool
	round uint64 // the last flush that carried its datagrams

	// timer wheel links
	tick         int64
	wprev, wnext *loopSession
	inWheel      bool
}

// loopPeer is a loop session's conn: what readSession sends is queued
// for the loop's next flush, from the address the request came to.
type loopPeer struct {
	l  *loop
	ls *loopSession
}

var errLoopRead = errors.New("tftp: a single-port transfer has no socket of its own")

func (p loopPeer) ReadFrom([]byte) (int, netip.AddrPort, error) {
	return 0, netip.AddrPort{}, errLoopRead
}
func (p loopPeer) SetReadDeadline(time.Time) error { return nil }
func (p loopPeer) Close() error                    { return nil }
func (p loopPeer) WriteTo(b []byte, dst netip.AddrPort) error {
	p.l.queue(p.ls, dst, p.ls.local, b, nil)
	return nil
}

// WriteDatagrams queues a window; the flush counts the syscalls.
func (p loopPeer) WriteDatagrams(dst netip.AddrPort, ds []udpio.Datagram) (int, error) {
	for _, d := range ds {
		p.l.queue(p.ls, dst, p.ls.local, d.Hdr, d.Payload)
	}
	return 0, nil
}

// queue adds a datagram to this round: hdr is copied, payload is not.
func (l *loop) queue(ls *loopSession, dst netip.AddrPort, src netip.Addr, hdr, payload []byte) {
	off := len(l.arena)
	l.arena = append(l.arena, hdr...)
	l.out = append(l.out, queuedSend{ls: ls, dst: dst, src: src, off: off, n: len(hdr), payload: payload})
}

// wake makes the loop look at its cancelled sessions and the server's
// state now: its read returns at once.
func (l *loop) wake() {
	l.woken.Store(true)
	l.c.SetReadDeadline(time.Unix(1, 0))
}

// cancel is called (on any goroutine) when a session's context ends.
func (l *loop) cancel(ls *loopSession) {
	l.mu.Lock()
	l.cancelled = append(l.cancelled, ls)
	l.mu.Unlock()
	l.wake()
}

// run serves until the server closes and its last transfer has ended, or
// the socket fails.
func (l *loop) run() error {
	s := l.s
	var cancelled []*loopSession
	for {
		// Wakes are taken before the cancelled list is read, so one that
		// comes after is seen below or ends the read.
		if l.woken.Swap(false) {
			l.deadline = time.Time{} // the wake moved it
		}
		l.mu.Lock()
		cancelled, l.cancelled = l.cancelled, cancelled[:0]
		l.mu.Unlock()
		for _, ls := range cancelled {
			if !ls.ended {
				l.stopped(ls)
			}
		}
		clear(cancelled)
		l.flush()
		if s.closing.Load() && len(l.sessions) == 0 {
			return nil
		}
		if dl := l.wheel.next(loopIdle); dl != l.deadline {
			l.deadline = dl
			l.c.SetReadDeadline(dl)
		}
		// Checked after the deadline is set: a wake from here on moves it
		// into the past and ends the read at once.
		if l.woken.Load() {
			continue
		}
		n, err := l.c.ReadBatch(l.bufs, l.pkts)
		if n == 0 && isTimeout(err) && !l.woken.Load() {
			// A timer ended the read, and a read whose deadline has
			// passed reads nothing: look again, briefly, so that a loop
			// starved of CPU takes the answers waiting for it before it
			// resends what they answer (docs/protocols.md §1.7).
			l.deadline = time.Now().Add(lateAnswerWait)
			l.c.SetReadDeadline(l.deadline)
			n, err = l.c.ReadBatch(l.bufs, l.pkts)
		}
		if err != nil && !isTimeout(err) {
			if errors.Is(err, net.ErrClosed) || s.closing.Load() {
				return err
			}
			s.Log.Warn().Err(err).Msg("tftp: read")
		}
		l.batch(l.pkts[:n])
		clear(l.pkts[:n])
		// A full batch leaves a backlog: its answers come before the
		// timers, for at most maxDeferredExpiry batches in a row so that
		// a flood cannot hold the timers off.
		if n < len(l.bufs) || l.deferred >= maxDeferredExpiry {
			l.deferred = 0
			l.expire(time.Now())
		} else {
			l.deferred++
		}
		l.flush()
	}
}

// batch takes the datagrams of one read: first those of running
// transfers, then the rest (requests). An ACK that confirms a request
// is thus seen before another request of its /24 can evict it from a
// full unconfirmed pool — what the default mode gets by looking into the
// evicted session's own socket (Server.makeRoom), which a shared socket
// cannot offer. Datagrams of one client keep their order.
func (l *loop) batch(pkts []udpio.Packet) {
	var later uint64 // bit i: pkts[i] is from no running transfer (len(pkts) <= loopBatch <= 64)
	for i, p := range pkts {
		if _, ok := l.sessions[p.Src]; !ok {
			later |= 1 << i
			continue
		}
		l.packet(p.Data, p.Src, p.Dst)
	}
	for i, p := range pkts {
		if later&(1<<i) != 0 {
			l.packet(p.Data, p.Src, p.Dst)
		}
	}
}

// packet takes one datagram that arrived on the listening socket.
func (l *loop) packet(pkt []byte, from netip.AddrPort, dst netip.Addr) {
	ls := l.sessions[from]
	if ls == nil {
		l.request(pkt, from, dst)
		return
	}
	if ls.sl.ctx.Err() != nil {
		l.stopped(ls)
		return
	}
	switch PacketOpcode(pkt) {
	case OpRRQ, OpWRQ:
		// The client repeated its request before our first reply reached
		// it: the running transfer answers.
		l.s.Counters.DupRequest.Add(1)
		return
	}
	done, err := ls.rs.onPacket(pkt, &ls.res)
	if err != nil {
		ls.rs.fail(&ls.res, err)
		done = true
	}
	if done {
		l.end(ls)
		return
	}
	l.arm(ls)
}

// request admits a request from a new client address and port (anything
// else from it is dropped: Server.admit counts it) and starts its
// transfer. Uploads, netascii and multicast requests get a goroutine and
// a port of their own as in the default mode: they are rare, and their
// setup (a netascii size scan, a multicast session) must not stall the
// loop. So do reads that negotiate more than a frame per ACK (start).
func (l *loop) request(pkt []byte, from netip.AddrPort, dst netip.Addr) {
	s := l.s
	req, sl, reply := s.admit(pkt, from, dst)
	if reply != nil {
		l.queue(nil, from, dst, reply, nil)
	}
	if sl == nil {
		return
	}
	_, mcast := req.Option(optMulticast)
	if req.Op != OpRRQ || req.Mode != "octet" || (mcast && s.Multicast != nil) {
		s.spawn(sl, req, len(pkt), from, dst)
		return
	}
	f, err := s.readFile(req, from, dst)
	if err != nil {
		code, msg := s.refuseRead(req, from, err)
		l.queue(nil, from, dst, AppendError(nil, code, msg), nil)
		s.release(sl)
		s.sessions.Done()
		return
	}
	l.start(sl, req, len(pkt), f, from, dst)
}

// loopMaxBlock is the largest block a transfer in the loop sends: one
// 1500-byte Ethernet frame less the IPv4, UDP and TFTP headers (20 + 8 +
// 4), the blksize PXE ROMs and iPXE ask for.
const loopMaxBlock = 1468

// readFile finds what a read request sends: a VirtualFiles file, else
// the file under the root.
func (s *Server) readFile(req *Request, peer netip.AddrPort, local netip.Addr) (servedFile, error) {
	if s.Virtual != nil {
		if data, ok, err := s.Virtual.Render(req.Filename, peer, local); ok {
			if err != nil {
				return nil, err
			}
			return memFile(data), nil
		}
	}
	f, err := s.Files.Get(req.Filename)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// refuseRead counts and logs a read request whose file cannot be served
// and returns the ERROR's code and message.
func (s *Server) refuseRead(req *Request, peer netip.AddrPort, err error) (ErrorCode, string) {
	code, msg, reason := fileErrorCode(err)
	if code == ErrCodeNotFound {
		s.Counters.NotFound.Add(1)
	} else {
		s.Counters.Denied.Add(1)
	}
	s.logRefusal(req, peer, reason, err)
	return code, msg
}

// start sets up a read transfer and sends its first packet. The
// listening port is known to anyone, so a spoofer who never sees a reply
// can send the ACKs a transfer in the loop expects; each buys what one
// ACK moves on for the forged source (amplification). A transfer that
// negotiated more than one frame per ACK — a window (up to 64 blocks),
// or a block past loopMaxBlock (allow_fragments: up to 64 KiB) — is
// handed to a goroutine and a port of its own, which only the real
// client learns (docs/security.md, "Single-port mode").
func (l *loop) start(sl *slot, req *Request, reqLen int, f servedFile, peer netip.AddrPort, local netip.Addr) {
	s := l.s
	size := f.Size()
	neg := Negotiate(req, s.limits(local), size)
	if neg.WindowSize > 1 || neg.BlockSize > loopMaxBlock {
		f.Release()
		s.spawn(sl, req, reqLen, peer, local)
		return
	}
	s.Counters.RRQ.Add(1)
	var oack []byte
	if len(neg.Ack) > 0 {
		oack = AppendOACK(nil, neg.Ack)
	}
	now := time.Now()
	lv := s.transfers.start(Transfer{
		Client: peer, Op: "read", File: req.Filename, Size: size,
		BlockSize: neg.BlockSize, WindowSize: neg.WindowSize, Start: now,
	})
	ls := &loopSession{sl: sl, req: req, peer: peer, local: local, file: f, live: lv}
	rs := &ls.rs
	*rs = readSession{
		c: loopPeer{l, ls}, peer: peer, src: &mappedSource{data: f.Data(), blksize: neg.BlockSize},
		size: size, neg: neg, oack: oack, timing: s.timing(), counters: &s.Counters,
		truncated: f.Truncated, prog: &lv.prog, confirm: func() error { return s.confirm(sl) },
	}
	ls.res.Start = now
	rs.est = rs.timing.estimator()
	ls.wait = newSessionWait(rs.c, peer, &s.Counters, now, rs.timing, "answer", &rs.replier)
	rs.prepare(now)
	rs.rbuf = nil // the loop reads into its own buffers
	l.sessions[peer] = ls
	ls.stop = context.AfterFunc(sl.ctx, func() { l.cancel(ls) })
	if err := rs.send(false, &ls.res); err != nil {
		rs.fail(&ls.res, err)
		l.end(ls)
		return
	}
	l.arm(ls)
}

// arm sets the session's timer: its retransmission timeout, capped by
// its lifetime and, while its client is unproven, its confirm deadline.
func (l *loop) arm(ls *loopSession) {
	rs := &ls.rs
	l.wheel.add(ls, ls.wait.deadline(rs.sentAt.Add(rs.est.RTO()), time.Time{}, !rs.heard))
}

// expire runs the timers due at now.
func (l *loop) expire(now time.Time) {
	l.due = l.wheel.expire(now, l.due[:0])
	for i, ls := range l.due {
		l.due[i] = nil
		if ls.ended {
			continue
		}
		if ls.sl.ctx.Err() != nil {
			l.stopped(ls)
			continue
		}
		rs := &ls.rs
		timer := rs.sentAt.Add(rs.est.RTO())
		unproven := !rs.heard
		switch ls.wait.timedOut(ls.wait.deadline(timer, time.Time{}, unproven), timer, unproven, &ls.res) {
		case waitEnd:
			l.end(ls)
		case waitTimeout:
			done, err := rs.onTimeout(&ls.res)
			if err != nil {
				rs.fail(&ls.res, err)
				done = true
			}
			if done {
				l.end(ls)
				continue
			}
			l.arm(ls)
		default: // woken before its time (a wheel tick is coarse)
			l.arm(ls)
		}
	}
}

// stopped ends a session whose context ended: silently when its request
// was evicted, with an ERROR when the server shuts down.
func (l *loop) stopped(ls *loopSession) {
	if evicted(ls.sl.ctx) {
		ls.res.Outcome, ls.res.Err = OutcomeEvicted, errEvicted
	} else {
		ls.wait.sendError(ErrCodeUndefined, "server shutting down")
		ls.res.Outcome, ls.res.Err = OutcomeShutdown, ls.sl.ctx.Err()
	}
	l.end(ls)
}

// end takes a finished session out of the loop; it is released after the
// flush that carries its last datagrams (its payloads point into its
// file's mapping).
func (l *loop) end(ls *loopSession) {
	if ls.ended {
		return
	}
	ls.ended = true
	if l.sessions[ls.peer] == ls {
		delete(l.sessions, ls.peer)
	}
	l.wheel.remove(ls)
	l.ended = append(l.ended, ls)
}

// flush sends this round's datagrams, then releases the sessions that
// ended. A send error belongs to one datagram: its session fails (a
// fault is a truncated file), the rest are sent.
func (l *loop) flush() {
	s := l.s
	for len(l.out) > 0 {
		out, arena := l.out, l.arena
		l.out, l.arena = l.spare[:0], l.spareArena[:0]
		l.round++
		l.msgs = l.msgs[:0]
		for _, q := range out {
			l.msgs = append(l.msgs, udpio.Message{Dst: q.dst, Src: q.src,
				Datagram: udpio.Datagram{Hdr: arena[q.off : q.off+q.n], Payload: q.payload}})
			if q.ls != nil && q.ls.round != l.round {
				q.ls.round = l.round
				q.ls.res.Syscalls++ // a share of one send call
			}
		}
		for base := 0; base < len(out); {
			sent, calls, err := l.c.WriteMessages(l.msgs[base:])
			s.Counters.SendSyscalls.Add(uint64(calls))
			if err == nil {
				break
			}
			l.sendFailed(out[base+sent], err)
			base += sent + 1
		}
		clear(out)
		clear(l.msgs)
		l.spare, l.spareArena = out[:0], arena[:0]
	}
	for i, ls := range l.ended {
		l.finish(ls)
		l.ended[i] = nil
	}
	l.ended = l.ended[:0]
}

// sendFailed handles the send error of one queued datagram.
func (l *loop) sendFailed(q queuedSend, err error) {
	l.s.Counters.SendErrors.Add(1)
	ls := q.ls
	if ls == nil || ls.ended {
		return
	}
	switch {
	case errors.Is(err, syscall.EFAULT) || ls.rs.truncated():
		ls.rs.fail(&ls.res, errFileChanged)
	case errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN):
		return // transient back-pressure is loss: the timer resends
	default:
		ls.rs.fail(&ls.res, err)
	}
	l.end(ls)
}

// finish logs, counts and releases an ended session.
func (l *loop) finish(ls *loopSession) {
	s := l.s
	res := &ls.res
	res.End, res.RTO, res.Heard = time.Now(), ls.rs.est.RTO(), ls.rs.heard
	ls.stop()
	s.transfers.end(ls.live, *res, res.RTO)
	s.finish(ls.req, ls.peer, ls.rs.neg, *res)
	ls.file.Release()
	s.release(ls.sl)
	s.sessions.Done()
}

// ServeSinglePort serves on pcs, sockets bound to one address (more than
// one: with SO_REUSEPORT, ListenReusePort), with one event loop each:
// every read transfer is answered from the listening port (SinglePort).
// It returns like Serve and takes ownership of pcs.
func (s *Server) ServeSinglePort(ctx context.Context, pcs []*net.UDPConn) error {
	var lns []*udpio.Conn
	var conns []loopConn
	for i, pc := range pcs {
		ln, err := s.open(pc)
		if err != nil {
			for _, c := range lns {
				c.Close()
			}
			for _, pc := range pcs[i+1:] {
				pc.Close()
			}
			return err
		}
		lns = append(lns, ln)
		conns = append(conns, ln)
	}
	if len(lns) == 0 {
		return errors.New("tftp: ServeSinglePort without a socket")
	}
	return s.runLoops(ctx, lns[0], conns)
}

// runLoops runs one event loop per conn until ctx is cancelled (running
// transfers end with an ERROR) or Shutdown. ln is the first conn as a
// udpio.Conn (nil in tests), for Listener and the start log.
func (s *Server) runLoops(ctx context.Context, ln *udpio.Conn, conns []loopConn) error {
	loops := make([]*loop, len(conns))
	for i, c := range conns {
		loops[i] = newLoop(s, c)
	}
	wake := func() {
		for _, l := range loops {
			l.wake()
		}
	}
	if err := s.prepare(ln, wake); err != nil {
		for _, c := range conns {
			c.Close()
		}
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.closing.Store(true)
		s.mu.Unlock()
		s.stopAll()
		wake()
	})
	defer stop()
	errs := make(chan error, len(loops))
	for _, l := range loops {
		go func() {
			err := l.run()
			if err != nil { // a broken socket: stop the others too
				s.mu.Lock()
				s.closing.Store(true)
				s.mu.Unlock()
				s.stopAll()
				wake()
			}
			errs <- err
		}()
	}
	var first error
	for range loops {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	// Closed only when every loop is done: closing one socket of a
	// SO_REUSEPORT group moves clients of the others to the rest.
	for _, c := range conns {
		c.Close()
	}
	s.sessions.Wait() // uploads and the other goroutine transfers
	switch {
	case ctx.Err() != nil:
		return nil
	case s.closing.Load():
		return ErrServerClosed
	}
	return first
}
