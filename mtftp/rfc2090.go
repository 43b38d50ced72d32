package mtftp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/tftp"
)

// OptMulticast is the RFC 2090 option name.
const OptMulticast = "multicast"

// sessionKey names one RFC 2090 session: a file version and a block size
// (docs/protocols.md §6.4: one session per (file version, blksize)).
type sessionKey struct {
	name    string
	size    int64
	mtime   int64
	blksize int
}

func (k sessionKey) sameFile(o sessionKey) bool {
	return k.name == o.name && k.size == o.size && k.mtime == o.mtime
}

// member is one client of a session, in arrival order.
type member struct {
	peer    netip.AddrPort
	opts    []tftp.Option // the OACK for this client; opts[mc] is the multicast option
	mc      int
	done    chan struct{}
	outcome tftp.Outcome
	silence time.Time // last OACK mc=0 (re-silencing is rate-limited)
	owed    int       // copies of its first OACK mc=0 still to send (passiveOACKs)
}

// passiveOACKs is how often a client's first OACK mc=0 goes out, one RTO
// apart (docs/protocols.md §6.4). A passive client never answers it (RFC
// 2090), and its repeated RRQ is a duplicate the TFTP port drops while the
// session serves it: with that one OACK lost it stayed out of the group
// until promoted, then asked for every block. Three copies: at 5 % loss
// (the tests' rate) one join in 8,000 loses all of them.
const passiveOACKs = 3

// ServeMulticast implements tftp.MulticastHandler: it takes an RRQ carrying
// the RFC 2090 `multicast` option into a session for that file and blocks
// until that client is done (or ctx is cancelled), then returns true. It
// returns false at once, having sent nothing, when the request cannot be
// served by multicast — netascii, a file of more than 65535 blocks at the
// negotiated blksize, a blksize below a running session's, no free group,
// the file not found (the unicast path reports that) — and the caller then
// serves it by unicast without acknowledging `multicast`.
func (s *Server) ServeMulticast(ctx context.Context, req *tftp.Request, peer netip.AddrPort, local netip.Addr) bool {
	if err := s.Init(); err != nil {
		s.Log.Error().Err(err).Msg("mtftp: not configured, multicast requests served by unicast")
		return false
	}
	if _, native := req.Option(OptNative); native && req.Op == tftp.OpRRQ {
		return s.serveNative(ctx, req, peer, local)
	}
	if req.Op != tftp.OpRRQ || req.Mode != "octet" {
		return s.fallback(req, peer, "mode "+req.Mode) // atftp refuses netascii too (docs/protocols.md §6.1)
	}
	f, err := s.Files.Get(req.Filename)
	if err != nil {
		return false // the unicast path answers with the right ERROR
	}
	size := f.Size()
	neg := tftp.Negotiate(req, tftp.Limits{MaxBlockSize: s.MaxBlockSize, MaxWindow: 1}, size)
	key := sessionKey{f.Name(), size, f.ModTime().UnixNano(), neg.BlockSize}
	m, refused := s.joinSession(ctx, req, peer, local, key, f)
	if m == nil {
		if refused != "" { // else the server is closing
			s.fallback(req, peer, refused)
		}
		return false
	}
	s.Counters.Receivers.Add(1)
	select {
	case <-m.done:
	case <-ctx.Done():
		<-m.done // the session stops on the same ctx and finishes every member
	}
	return true
}

// fallback counts and logs a request refused multicast; it returns false
// for ServeMulticast to return (the request is then served by unicast).
func (s *Server) fallback(req *tftp.Request, peer netip.AddrPort, reason string) bool {
	s.Counters.Fallbacks.Add(1)
	s.Log.Info().Str("client", peer.String()).Str("file", req.Filename).Str("reason", reason).Msg("mtftp: multicast refused, unicast instead")
	return false
}

// joinSession queues peer as a member of key's session, starting the
// session if none runs. f is the file opened for the request: a session
// started here keeps it, else it is released. A nil member comes with
// the reason the request is refused multicast, or "" when the server is
// closing.
func (s *Server) joinSession(ctx context.Context, req *tftp.Request, peer netip.AddrPort, local netip.Addr, key sessionKey, f *filestore.File) (*member, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		f.Release()
		return nil, ""
	}
	ss, refused := s.findSession(key)
	if ss == nil && refused == "" {
		if ss, refused = s.startSession(ctx, key, f, local); ss != nil {
			f = nil // the session owns it now
		}
	}
	if f != nil {
		f.Release()
	}
	if ss == nil {
		return nil, refused
	}
	m := &member{peer: peer, done: make(chan struct{}), opts: ackOptions(req, ss.key.blksize, key.size)}
	for i, o := range m.opts {
		if strings.EqualFold(o.Name, OptMulticast) {
			m.mc = i
		}
	}
	select {
	case ss.joins <- m:
		return m, ""
	default:
		return nil, "session join queue full"
	}
}

// findSession returns the running session of key's file that a client
// asking key.blksize can join: the one with the largest blksize up to
// it (a server may lower blksize, never raise it: RFC 2348). With none,
// it says why no new one may start either ("" : one may). Called with
// s.mu held.
func (s *Server) findSession(key sessionKey) (*session, string) {
	var ss *session
	otherBlk := false
	for k, cand := range s.sessions {
		if !k.sameFile(key) {
			continue
		}
		if k.blksize <= key.blksize && (ss == nil || k.blksize > ss.key.blksize) {
			ss = cand
		} else {
			otherBlk = true
		}
	}
	switch {
	case ss != nil:
		return ss, ""
	case otherBlk:
		return nil, "blksize below the running session's"
	case tftp.BlockCount(key.size, key.blksize) > MaxBlocks:
		return nil, fmt.Sprintf("%d blocks of %d bytes: more than 65535 (no rollover in multicast)", tftp.BlockCount(key.size, key.blksize), key.blksize)
	}
	return nil, ""
}

// startSession starts key's session on a free group, serving f (which it
// keeps when it returns a session). Called with s.mu held.
func (s *Server) startSession(ctx context.Context, key sessionKey, f *filestore.File, local netip.Addr) (*session, string) {
	group, c, refused := groupSocket(s, s.dial, local, "session socket")
	if refused != "" {
		return nil, refused
	}
	ss := &session{
		s: s, key: key, file: f, data: f.Data(), c: c, group: group,
		joins: make(chan *member, 64), t: s.timing(),
	}
	s.sessions[key] = ss
	s.launch(ctx, &s.Counters.Sessions, ss.run)
	return ss, ""
}

// launch runs a session just listed, counting it in started and Active;
// the session's end calls s.wg.Done. Called with s.mu held.
func (s *Server) launch(ctx context.Context, started *atomic.Uint64, run func(context.Context)) {
	s.wg.Add(1)
	started.Add(1)
	s.Counters.Active.Add(1)
	go run(ctx)
}

// ackOptions builds a member's OACK: blksize (the session's), tsize and
// multicast, in the client's order; everything else is not acknowledged
// (windowsize and timeout make no sense for a shared stream).
func ackOptions(req *tftp.Request, blksize int, size int64) []tftp.Option {
	var out []tftp.Option
	seen := map[string]bool{}
	for _, o := range req.Options {
		name := strings.ToLower(o.Name)
		if seen[name] {
			continue
		}
		seen[name] = true
		switch name {
		case tftp.OptBlockSize:
			if v, err := strconv.Atoi(o.Value); err == nil && v >= tftp.MinBlockSize {
				out = append(out, tftp.Option{Name: o.Name, Value: strconv.Itoa(blksize)})
			}
		case tftp.OptTransferSz:
			out = append(out, tftp.Option{Name: o.Name, Value: strconv.FormatInt(size, 10)})
		case OptMulticast:
			out = append(out, tftp.Option{Name: o.Name})
		}
	}
	return out
}

// groupSocket takes a free group and opens a session socket on local
// through dial; it returns the group with the session port. Failing, it
// returns why the request is refused multicast (what names the socket in
// the log). Called with s.mu held.
func groupSocket[C any](s *Server, dial func(netip.Addr) (C, error), local netip.Addr, what string) (netip.AddrPort, C, string) {
	var c C
	group, ok := s.allocGroup()
	if !ok {
		return netip.AddrPort{}, c, "no free group in " + s.GroupRange.String()
	}
	c, err := dial(local)
	if err != nil {
		delete(s.groups, group)
		s.Log.Error().Err(err).Msg("mtftp: " + what)
		return netip.AddrPort{}, c, "session socket"
	}
	return netip.AddrPortFrom(group, uint16(s.Port)), c, ""
}

// allocGroup takes the first free address of GroupRange (the PXE group
// excluded). Called with s.mu held.
func (s *Server) allocGroup() (netip.Addr, bool) {
	for a := s.GroupRange.Addr(); s.GroupRange.Contains(a); a = a.Next() {
		if !s.groups[a] && a != s.PXEGroup {
			s.groups[a] = true
			return a, true
		}
	}
	return netip.Addr{}, false
}

// session is one RFC 2090 stream: a file, a group, a server TID and the
// clients in arrival order; the oldest is the master and its ACKs decide
// what is multicast next (docs/protocols.md §6.4). All state is owned by run.
type session struct {
	s     *Server
	key   sessionKey
	file  *filestore.File
	data  []byte
	c     conn
	group netip.AddrPort
	joins chan *member
	t     timing

	members  []*member
	master   *member   // members[0] once it has been sent mc=1; nil when none
	owed     []*member // passive members still owed a copy of their OACK
	oackWait bool      // the master has been sent mc=1 and not answered yet
	cur      uint16    // block outstanding (DATA sent to the group, its ACK awaited)
	tries    int
	sentAt   time.Time
	resent   bool
	rto      rto.Estimator
	sent     []bool
	buf      []byte
	view     *sessionView

	// for the log line
	receivers, masters, blocks, repairs, promotions, dropped int
	wire                                                     int64
}

type packet struct {
	from netip.AddrPort
	b    []byte
}

func (ss *session) last() uint16 { return uint16(tftp.BlockCount(ss.key.size, ss.key.blksize)) }

// run serves the session until no client is left, its lifetime is over
// or the server stops; then it releases whoever is still listed and logs
// one line.
func (ss *session) run(ctx context.Context) {
	s := ss.s
	start := time.Now()
	ss.rto = newRTO(ss.t)
	ss.sent = make([]bool, int(ss.last())+1)
	ss.buf = make([]byte, tftp.HeaderLen+ss.key.blksize)
	ss.view = s.track(Session{
		Dialect: "rfc2090", File: ss.key.name, Group: ss.group, BlockSize: ss.key.blksize,
		Size: ss.key.size, Blocks: int(ss.last()), Start: start,
	})
	defer s.untrack(ss.view)
	pkts := make(chan packet, 256)
	go func() {
		defer close(pkts)
		readEach(ss.c, 2048, func(b []byte, from netip.AddrPort) {
			pkts <- packet{from, append([]byte(nil), b...)}
		})
	}()
	outcome, err := ss.serve(ctx, pkts)
	ss.release(outcome, err)
	ss.c.Close()
	for range pkts {
	}
	ss.file.Release()
	s.Counters.Active.Add(-1)
	s.wg.Done()
	ev := s.Log.Info()
	if outcome != tftp.OutcomeOK {
		ev = s.Log.Warn()
	}
	ev.Str("file", ss.key.name).Str("group", ss.group.String()).Int("blksize", ss.key.blksize).
		Int64("size", ss.key.size).Int("receivers", ss.receivers).Int("masters", ss.masters).
		Int("promotions", ss.promotions).Int("dropped", ss.dropped).Int("blocks_sent", ss.blocks).
		Int("repairs", ss.repairs).Int64("bytes_on_wire", ss.wire).Dur("duration", time.Since(start)).
		Str("outcome", string(outcome)).Err(err).Msg("multicast session")
}

// serve takes joins, the clients' packets and the master's timer until
// no client is left (OutcomeOK) or the session must end.
func (ss *session) serve(ctx context.Context, pkts <-chan packet) (tftp.Outcome, error) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	lifetime := time.NewTimer(ss.t.lifetime)
	defer lifetime.Stop()
	arm := func() { timer.Reset(ss.rto.RTO()) }
	for {
		if len(ss.members) == 0 && ss.tryEnd() {
			return tftp.OutcomeOK, nil
		}
		if ss.master == nil && len(ss.members) > 0 {
			ss.promote()
			arm()
		}
		// Every event, and the master's timer at least once an RTO while
		// anyone is listed, comes through here.
		ss.repeatOACKs(time.Now())
		select {
		case m := <-ss.joins:
			ss.receivers++
			ss.members = append(ss.members, m)
			ss.publish()
			if ss.master != nil {
				ss.oack(m, false)
				m.owed = passiveOACKs - 1
				ss.owed = append(ss.owed, m)
			}
		case p, ok := <-pkts:
			if !ok {
				return tftp.OutcomeError, errors.New("session socket closed")
			}
			rearm, err := ss.packet(p)
			if err != nil {
				return tftp.OutcomeFileChanged, err
			}
			if rearm && ss.master != nil {
				arm()
			}
		case <-timer.C:
			ss.s.Counters.Timeouts.Add(1)
			if err := ss.timeout(); err != nil {
				return tftp.OutcomeFileChanged, err
			}
			if ss.master != nil {
				arm()
			}
		case <-lifetime.C:
			return tftp.OutcomeLifetime, fmt.Errorf("session lifetime %s exceeded", ss.t.lifetime)
		case <-ctx.Done():
			return tftp.OutcomeShutdown, ctx.Err()
		}
	}
}

// release tells every client still listed or queued that the session
// ended (err, if any, says why) and finishes it with outcome.
func (ss *session) release(outcome tftp.Outcome, err error) {
	ss.tryEnd()
	for drained := false; !drained; {
		select {
		case m := <-ss.joins:
			ss.members = append(ss.members, m)
		default:
			drained = true
		}
	}
	if len(ss.members) == 0 {
		return
	}
	msg := "multicast session ended"
	if err != nil {
		msg = err.Error()
	}
	for _, m := range ss.members {
		ss.c.WriteTo(tftp.AppendError(nil, tftp.ErrCodeUndefined, msg), m.peer)
		ss.finish(m, outcome)
	}
	ss.members = nil
}

// tryEnd removes the session from the server if no client is listed or
// queued; it reports whether it did. Under s.mu, so a join either lands
// before (and is seen here) or finds no session and starts a new one.
func (ss *session) tryEnd() bool {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.key] != ss {
		return true
	}
	if len(ss.members) > 0 || len(ss.joins) > 0 {
		return false
	}
	delete(s.sessions, ss.key)
	delete(s.groups, ss.group.Addr())
	return true
}

// promote makes the oldest client master: OACK with mc=1 (RFC 2090: the
// next oldest client is sent an OACK naming it master).
func (ss *session) promote() {
	if len(ss.members) == 0 {
		return
	}
	ss.master = ss.members[0]
	ss.master.owed = 0 // its OACK mc=1 is repeated until it answers
	ss.masters++
	if ss.masters > 1 {
		ss.promotions++
		ss.s.Counters.Promotions.Add(1)
	}
	ss.oackWait, ss.tries, ss.cur, ss.resent = true, 0, 0, false
	ss.rto.Progress()
	ss.publish()
	ss.oack(ss.master, true)
}

// repeatOACKs sends the passive members whose last OACK mc=0 is an RTO
// old the next copy they are owed (passiveOACKs).
func (ss *session) repeatOACKs(now time.Time) {
	keep := ss.owed[:0]
	for _, m := range ss.owed {
		if m.owed > 0 && now.Sub(m.silence) >= ss.rto.RTO() {
			ss.oack(m, false)
			m.owed--
		}
		if m.owed > 0 {
			keep = append(keep, m)
		}
	}
	clear(ss.owed[len(keep):])
	ss.owed = keep
}

// publish copies the member list into the session's view (Sessions).
func (ss *session) publish() {
	r := make([]Receiver, len(ss.members))
	for i, m := range ss.members {
		r[i] = Receiver{Addr: m.peer, Master: m == ss.master}
	}
	ss.view.setReceivers(r)
}

// oack sends a client its OACK. The group address and port are always
// filled in, also in later OACKs where RFC 2090 allows ",,1": atftp's
// client reads them positionally, and a client that already joined that
// group just stays in it.
func (ss *session) oack(m *member, master bool) {
	opts := append([]tftp.Option(nil), m.opts...)
	mc := "0"
	if master {
		mc = "1"
	}
	opts[m.mc].Value = fmt.Sprintf("%s,%d,%s", ss.group.Addr(), ss.group.Port(), mc)
	if master {
		ss.sentAt = time.Now() // the master's answer is timed from here
	} else {
		m.silence = time.Now()
	}
	if err := ss.c.WriteTo(tftp.AppendOACK(nil, opts), m.peer); err != nil {
		ss.s.Counters.SendErrors.Add(1)
	}
}

func (ss *session) find(peer netip.AddrPort) int {
	for i, m := range ss.members {
		if m.peer == peer {
			return i
		}
	}
	return -1
}

func (ss *session) remove(i int, outcome tftp.Outcome) {
	m := ss.members[i]
	ss.members = append(ss.members[:i], ss.members[i+1:]...)
	if m == ss.master {
		ss.master = nil
	}
	ss.publish()
	ss.finish(m, outcome)
}

func (ss *session) finish(m *member, outcome tftp.Outcome) {
	switch outcome {
	case tftp.OutcomeOK:
		ss.s.Counters.Completed.Add(1)
	case tftp.OutcomeAborted:
		ss.s.Counters.Aborted.Add(1)
	case tftp.OutcomeDropped:
		ss.dropped++
		ss.s.Counters.Dropped.Add(1)
	}
	m.outcome = outcome
	m.owed = 0
	close(m.done)
}

// packet handles one datagram from a client.
// It reports whether the master's timer must be re-armed.
func (ss *session) packet(p packet) (rearm bool, err error) {
	s := ss.s
	i := ss.find(p.from)
	if i < 0 {
		s.Counters.UnknownPeer.Add(1)
		return false, nil
	}
	m := ss.members[i]
	switch tftp.PacketOpcode(p.b) {
	case tftp.OpERROR:
		ss.remove(i, tftp.OutcomeAborted)
		return false, nil
	case tftp.OpACK:
	default:
		s.Counters.BadPacket.Add(1)
		return false, nil
	}
	n, err := tftp.ParseAck(p.b)
	if err != nil || n > ss.last() {
		s.Counters.BadPacket.Add(1)
		return false, nil
	}
	// An ACK counts only for a block that went out: one for a block never
	// sent is forged (the session's and the members' addresses are
	// visible on the LAN) and would otherwise remove a member, or end the
	// session if it came "from" the master (docs/security.md).
	if n > 0 && !ss.sent[n] {
		s.Counters.BadPacket.Add(1)
		return false, nil
	}
	if m != ss.master {
		if n == ss.last() {
			ss.remove(i, tftp.OutcomeOK)
			return false, nil
		}
		// A passive client that ACKs thinks it is master (a lost or
		// stale OACK): silence it again, at most once per RTO.
		if now := time.Now(); now.Sub(m.silence) >= ss.rto.RTO() {
			s.Counters.Resilenced.Add(1)
			ss.oack(m, false)
		}
		return false, nil
	}
	// The master: ACK n means "send n+1" (RFC 2090, Data Transfer).
	if !ss.resent && (ss.oackWait || n == ss.cur) {
		ss.rto.Sample(time.Since(ss.sentAt)) // Karn: never from a retransmission
	}
	if n == ss.last() {
		ss.remove(i, tftp.OutcomeOK)
		return false, nil
	}
	if !ss.oackWait && n+1 == ss.cur {
		// The ACK before the outstanding block: a duplicate, or the
		// client's own retransmission; our timer resends cur if it was
		// lost (answering every duplicate is the Sorcerer's Apprentice).
		return false, nil
	}
	ss.oackWait = false
	ss.tries = 0
	ss.rto.Progress()
	return true, ss.sendData(n+1, false)
}

// timeout handles the master's retransmission timer.
func (ss *session) timeout() error {
	if ss.master == nil {
		return nil
	}
	ss.tries++
	ss.rto.Timeout()
	if ss.oackWait {
		if ss.tries >= ss.t.promote {
			// A promotee that stays silent is skipped (RFC 2090); so is a
			// first master that never ACKs its OACK.
			ss.remove(0, tftp.OutcomeDropped)
			return nil
		}
		ss.resent = true
		ss.oack(ss.master, true)
		return nil
	}
	if ss.tries > ss.t.retries {
		ss.remove(0, tftp.OutcomeDropped)
		return nil
	}
	if err := ss.sendData(ss.cur, true); err != nil {
		return err
	}
	// atftp's master answers a repeated block with one extra ACK, then
	// ignores further repeats, each of which restarts its own 5 s timeout:
	// with its ACK and extra ACK both lost it would stay silent until we
	// drop it. A fresh unicast OACK mc=1 makes it ACK its first hole again
	// (a duplicate ACK of the block before cur is ignored above).
	ss.oack(ss.master, true)
	return nil
}

// errFileChanged ends a session whose file was truncated under it.
var errFileChanged = errors.New("file changed during transfer")

// sendData multicasts block n. A fault on the mapping (the file was
// truncated on disk) is recovered and reported as errFileChanged.
func (ss *session) sendData(n uint16, retransmit bool) (err error) {
	pkt, err := buildData(ss.buf, ss.data, n, ss.key.blksize)
	if err != nil {
		return err
	}
	ss.cur, ss.sentAt, ss.resent = n, time.Now(), retransmit
	ss.view.block(n, ss.sent[n])
	if ss.sent[n] {
		ss.repairs++
		ss.s.Counters.Repairs.Add(1)
	}
	ss.sent[n] = true
	ss.blocks++
	ss.wire += int64(len(pkt))
	ss.s.Counters.DataSent.Add(1)
	ss.s.Counters.BytesSent.Add(uint64(len(pkt)))
	if err := ss.c.WriteTo(pkt, ss.group); err != nil {
		ss.s.Counters.SendErrors.Add(1)
	}
	return nil
}

// buildData copies block n (1-based) of data into buf behind a DATA header.
// The data is a mapping: a file truncated under it fails the block
// (errFileChanged), not the server.
func buildData(buf, data []byte, n uint16, blksize int) ([]byte, error) {
	off := (int64(n) - 1) * int64(blksize)
	if off > int64(len(data)) || n == 0 {
		return nil, fmt.Errorf("block %d is past the end of a %d-byte file", n, len(data))
	}
	end := min(off+int64(blksize), int64(len(data)))
	tftp.PutDataHeader(buf, n)
	var k int
	if err := filestore.ReadMapped(func() { k = copy(buf[tftp.HeaderLen:], data[off:end]) }); err != nil {
		return nil, fmt.Errorf("%w: %w", errFileChanged, err)
	}
	return buf[:tftp.HeaderLen+k], nil
}
