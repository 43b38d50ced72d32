package mtftp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/klauspost/reedsolomon"
	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/udpio"
	"github.com/mtftpd/mtftpd/tftp"
)

// rejoinAfter: silence on the group (three heartbeats missed) after which
// a receiver joins it again.
const rejoinAfter = 600 * time.Millisecond

// sessionLostAfter: silence from the server after which a receiver asks
// for the file again (ten heartbeats missed).
const sessionLostAfter = 2 * time.Second

// ErrNativeUnsupported: the server answered the native request as plain
// TFTP (it does not speak the dialect, or multicast is off there). The
// caller falls back to a unicast download.
var ErrNativeUnsupported = errors.New("mtftp: server does not offer native multicast")

// NativeReceiver downloads a file from a native-dialect session (docs/
// native-multicast.md): it joins the stream's group, writes shards into
// the output file at their offsets as they arrive, asks for what it lost,
// rebuilds stripes from repairs, and checks the file's SHA-256 at the end.
type NativeReceiver struct {
	// BlockSize is the TFTP blksize asked for (the shard is 8 bytes
	// less); 0 = DefaultMaxBlockSize.
	BlockSize int
	// Interface is where the group is joined; "" = the interface of the
	// address the server is reached from (or of LocalAddr).
	Interface string
	// LocalAddr is the address requests and reports are sent from; zero =
	// the one that routes to the server. (Servers cap transfers per client
	// address: a load test spreads receivers over several.)
	LocalAddr netip.Addr
	// Timeout is the silence from the server tolerated before giving up;
	// 0 = 10 s. Requests are retried every second until then.
	Timeout time.Duration
	// Log receives the receiver's events (moves, errors).
	Log zerolog.Logger
	// Start asks for a start policy when this request creates the
	// session (the server caps it; a server rule for the file wins).
	Start StartPolicy

	// Progress: bytes of the file held so far (read it at any time) and
	// the file size once known (-1 before).
	Held atomic.Int64
	Size atomic.Int64

	// wantSegs is how many WANT segments a partial download sends (told
	// to the server in its request, so a session waits for them).
	wantSegs int

	// listenData opens the socket the stream is read from; tests replace it.
	listenData func(group netip.AddrPort, ifi *net.Interface) (dataConn, error)
}

// Range is a byte range of a file.
type Range struct{ Off, Len int64 }

// partialBudget bounds the stripes a partial download holds while they
// are incomplete: a stripe that would start beyond it is dropped and
// asked for again later, so memory does not grow with the file.
const partialBudget = 32 << 20

// dataConn is the group socket: batched reads in production.
type dataConn interface {
	ReadBatch(bufs [][]byte, out []udpio.Packet) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// NativeResult describes a finished download.
type NativeResult struct {
	Size      int64
	SHA256    string
	Duration  time.Duration
	Shards    int64 // data and repair shards taken
	Duplicate int64 // shards that arrived again
	Rebuilt   int64 // data shards rebuilt from parity
	Lost      int64 // carousel shards seen missing
	Naks      int64 // stripes asked for
	Moves     int   // times moved to a slower stream
	Rejoins   int   // times the session was lost and the file asked for again
	ShardSize int
}

// Get downloads remote from server (HOST[:PORT], port 69 by default) into
// out, which it truncates to the file's size; out must be a regular file.
// On error out's content is undefined (callers write to a temp file).
func (r *NativeReceiver) Get(ctx context.Context, server, remote string, out *os.File) (NativeResult, error) {
	return r.download(ctx, server, remote, -1, &recvState{}, out)
}

// GetRanges receives only the byte ranges want of remote, a file of size
// bytes (a session of another size is an error: the file changed), from
// a native session, which streams only the stripes its receivers want
// (docs/native-multicast.md, "Partial downloads"). Every byte of want is
// handed to deliver exactly once, in pieces of at most one stripe, in no
// particular order; deliver must copy what it keeps (the buffer is
// reused) and its error ends the download. deliver runs on a goroutine of
// its own, one call at a time, never after GetRanges returns; while it is
// slow, completed stripes wait within the budget and the download goes on
// (a blocking deliver must still return when ctx is done: GetRanges waits
// for the call under way). Nothing is written anywhere
// else and memory stays bounded (partialBudget); there is no whole-file
// digest to check — the caller verifies what it assembles.
func (r *NativeReceiver) GetRanges(ctx context.Context, server, remote string, size int64, want []Range, deliver func(off int64, b []byte) error) (NativeResult, error) {
	r.wantSegs = r.segmentsFor(want)
	return r.download(ctx, server, remote, size, &recvState{partial: true, ranges: want, deliver: deliver}, nil)
}

// download is Get and GetRanges: rc says which (partial, with its ranges
// and sink), size is the file size expected (-1: any).
func (r *NativeReceiver) download(ctx context.Context, server, remote string, size int64, rc *recvState, out *os.File) (NativeResult, error) {
	r.Size.Store(-1)
	r.Held.Store(0)
	start := time.Now()
	srv, err := resolveServerAddr(server)
	if err != nil {
		return NativeResult{}, err
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	local := netip.AddrPortFrom(r.LocalAddr, 0)
	if !r.LocalAddr.IsValid() {
		ctl, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv))
		if err != nil {
			return NativeResult{}, err
		}
		local = ctl.LocalAddr().(*net.UDPAddr).AddrPort()
		ctl.Close()
	}
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), 0)))
	if err != nil {
		return NativeResult{}, err
	}
	defer uc.Close()
	sess, from, tok, err := r.request(ctx, uc, srv, remote, rc.partial, timeout)
	if err != nil {
		return NativeResult{}, err
	}
	if err := r.checkGeometry(sess); err != nil {
		return NativeResult{}, err
	}
	if size >= 0 && int64(sess.Size) != size {
		return NativeResult{}, fmt.Errorf("mtftp: %s is %d bytes on the server, expected %d: truncated or changed", remote, sess.Size, size)
	}
	ifi, err := r.iface(local.Addr())
	if err != nil {
		return NativeResult{}, err
	}
	rc.r, rc.ctl, rc.srv, rc.origin, rc.remote, rc.tok, rc.ifi = r, uc, from, srv, remote, tok, ifi
	rc.rrq = r.rrq(remote, rc.partial, tok)
	rc.res = NativeResult{ShardSize: int(sess.ShardSize)}
	if err := rc.setup(sess, out); err != nil {
		return rc.res, err
	}
	defer rc.unmap()
	err = rc.run(ctx, timeout)
	rc.res.Duration = time.Since(start)
	rc.res.Size = rc.g.size
	return rc.res, err
}

func resolveServerAddr(s string) (netip.AddrPort, error) {
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(s, "69")
	}
	ua, err := net.ResolveUDPAddr("udp4", s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port()), nil
}

func (r *NativeReceiver) iface(local netip.Addr) (*net.Interface, error) {
	if r.Interface != "" {
		return net.InterfaceByName(r.Interface)
	}
	if ifi := interfaceOf(local); ifi != nil {
		return ifi, nil
	}
	return nil, fmt.Errorf("mtftp: no interface holds %v to join the group on (use an interface)", local)
}

// segmentsFor counts the WANT segments want will take, in the geometry
// checkGeometry holds the session to.
func (r *NativeReceiver) segmentsFor(want []Range) int {
	blk := r.BlockSize
	if blk == 0 {
		blk = DefaultMaxBlockSize
	}
	shard := int64(nativeBlockSize(blk) - nativeBlkAdjust)
	if shard <= 0 {
		return 1
	}
	seg := shard * DefaultStripeData * maxWantBits // file bytes per segment
	n, last := 0, int64(-1)
	for _, w := range want {
		for sg := w.Off / seg; sg <= (w.Off+w.Len-1)/seg; sg++ {
			if sg != last {
				n++
				last = sg
			}
		}
	}
	return max(1, n)
}

// checkGeometry refuses a session laid out as this server would never lay
// it out: per-stripe state grows as the shard shrinks, so a forged or
// broken answer with 8-byte shards must not make the receiver allocate
// tens of bytes for every 8 of the file.
func (r *NativeReceiver) checkGeometry(p sessionPkt) error {
	blk := r.BlockSize
	if blk == 0 {
		blk = DefaultMaxBlockSize
	}
	want := nativeBlockSize(blk) - nativeBlkAdjust
	if int(p.ShardSize) != want || p.K != DefaultStripeData || p.M != DefaultStripeParity {
		return fmt.Errorf("mtftp: the server's session has %d-byte shards in stripes of %d+%d; asked for blksize %d, expected %d-byte shards in %d+%d",
			p.ShardSize, p.K, p.M, blk, want, DefaultStripeData, DefaultStripeParity)
	}
	return nil
}

// rrq is the request that asks for remote by the native dialect (for
// part of it: partial).
func (r *NativeReceiver) rrq(remote string, partial bool, cookie token) []byte {
	blk := r.BlockSize
	if blk == 0 {
		blk = DefaultMaxBlockSize
	}
	req := tftp.Request{Op: tftp.OpRRQ, Filename: remote, Mode: "octet", Options: []tftp.Option{
		{Name: tftp.OptBlockSize, Value: strconv.Itoa(blk)}, {Name: OptMulticast}, {Name: OptNative, Value: NativeVersion},
	}}
	if partial {
		req.Options = append(req.Options, tftp.Option{Name: OptWant, Value: strconv.Itoa(max(1, r.wantSegs))})
	}
	if cookie != (token{}) {
		req.Options = append(req.Options, tftp.Option{Name: OptCookie, Value: hex.EncodeToString(cookie[:])})
	}
	p := r.Start
	if p.MinReceivers > 0 {
		req.Options = append(req.Options, tftp.Option{Name: OptMinReceivers, Value: strconv.Itoa(p.MinReceivers)})
	}
	if p.MaxWait > 0 {
		req.Options = append(req.Options, tftp.Option{Name: OptMaxWait, Value: strconv.FormatInt(p.MaxWait.Milliseconds(), 10)})
	}
	if p.Settle > 0 {
		req.Options = append(req.Options, tftp.Option{Name: OptSettle, Value: strconv.FormatInt(p.Settle.Milliseconds(), 10)})
	}
	return req.Marshal(nil)
}

// request sends the RRQ (retried at growing intervals up to a second, bounded by timeout) until a
// SESSION packet arrives from the server's address.
// A CHALLENGE is answered at once with the request again, carrying its
// cookie (the server keeps nothing until then); the cookie is returned as
// the receiver's token.
func (r *NativeReceiver) request(ctx context.Context, uc *net.UDPConn, srv netip.AddrPort, remote string, partial bool, timeout time.Duration) (sessionPkt, netip.AddrPort, token, error) {
	var cookie token
	rrq := r.rrq(remote, partial, cookie)
	p, from, err := r.requestRaw(ctx, uc, srv, &rrq, &cookie, func() []byte { return r.rrq(remote, partial, cookie) }, timeout)
	return p, from, cookie, err
}

func (r *NativeReceiver) requestRaw(ctx context.Context, uc *net.UDPConn, srv netip.AddrPort, rrqp *[]byte, cookie *token, rebuild func() []byte, timeout time.Duration) (sessionPkt, netip.AddrPort, error) {
	rrq := *rrqp
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	retry := 250 * time.Millisecond // a session gathers receivers for 300 ms: a lost request should not miss it
	for ; time.Now().Before(deadline); retry = min(2*retry, time.Second) {
		if ctx.Err() != nil {
			return sessionPkt{}, netip.AddrPort{}, ctx.Err()
		}
		if _, err := uc.WriteToUDPAddrPort(rrq, srv); err != nil {
			return sessionPkt{}, netip.AddrPort{}, err
		}
		wait := time.Now().Add(retry)
		if deadline.Before(wait) {
			wait = deadline
		}
		uc.SetReadDeadline(wait)
		for {
			n, from, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // retry the request
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if from.Addr() != srv.Addr() {
				continue
			}
			b := buf[:n]
			switch op := nativeOp(b); {
			case op == opNativeChallenge:
				c, err := parseChallenge(b)
				if err != nil || c == *cookie {
					continue
				}
				*cookie = c
				rrq = rebuild()
				*rrqp = rrq
				if _, err := uc.WriteToUDPAddrPort(rrq, srv); err != nil {
					return sessionPkt{}, netip.AddrPort{}, err
				}
			case op == opNativeSession:
				p, err := parseSession(b)
				if err != nil {
					return p, from, err
				}
				return p, from, nil
			case op == uint16(tftp.OpERROR):
				if code, msg, err := tftp.ParseError(b); err == nil {
					re := &tftp.RemoteError{Code: code, Message: msg}
					if tftp.IsBusy(re) {
						continue // its session slots are full for a moment: ask again
					}
					return sessionPkt{}, from, re
				}
				return sessionPkt{}, from, errors.New("mtftp: malformed ERROR from server")
			case op == uint16(tftp.OpOACK) || op == uint16(tftp.OpDATA):
				// A plain TFTP transfer began: end it, the caller goes unicast.
				uc.WriteToUDPAddrPort(tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "native multicast only"), from)
				return sessionPkt{}, from, ErrNativeUnsupported
			}
		}
	}
	return sessionPkt{}, netip.AddrPort{}, fmt.Errorf("mtftp: no answer from %v in %v", srv, timeout)
}

// recvState is one download's state, owned by the Get goroutine.
type recvState struct {
	r      *NativeReceiver
	ctl    *net.UDPConn
	srv    netip.AddrPort // the session socket's address
	origin netip.AddrPort // the server's TFTP address, asked again if the session is lost
	rrq    []byte
	remote string
	tok    token     // the cookie: our token in STATUS, WANT and DONE
	asked  time.Time // when the request was last sent again
	ifi    *net.Interface
	sess   sessionPkt
	g      geometry
	enc    reedsolomon.Encoder
	data   []byte // the output file, mapped (omap.data)
	omap   outputMap
	dc     dataConn
	res    NativeResult
	ctlIn  chan ctlPkt

	// per stripe: which shards are held (bit i = shard i, data then
	// parity), how many (zeros past the file's end count as held), data
	// shards held, the status round of its last NAK, and parity bytes
	have     [][4]uint64
	count    []uint16
	dataHave []uint16
	nakRound []uint32
	gotRound []uint32 // status round in which a shard of the stripe last arrived
	parity   map[int64][][]byte
	complete int64

	firstSeq, curSeq uint64
	seen             bool
	lastPkt          uint32
	pktSeen          bool
	idle, closed     bool
	shaOK            bool
	sha              [32]byte
	round            uint32
	nakFrom          int64

	// since the last status
	seenPkts, lostShards, gotBytes int64
	lastStatus                     time.Time
	heard                          time.Time // last datagram from the group

	// A partial download (GetRanges): stripes held in buffers until
	// complete, then the wanted bytes go to deliver; wanted are the
	// stripes asked for, segFrom the position each WANT segment is served
	// from (absent: not acknowledged yet).
	partial  bool
	ranges   []Range
	deliver  func(off int64, b []byte) error
	sinkErr  error
	wanted   []bool
	bufs     map[int64][]byte
	bufBytes int64
	free     [][]byte
	segFrom  map[uint32]uint64

	// The delivery goroutine (startSink): completed stripes waiting for
	// it, in order; jobs to it and buffers back; how many it holds.
	ready    []int64
	sinkJobs chan sinkJob
	sinkBack chan sinkDone
	sinkStop chan struct{}
	sinkExit chan struct{}
	sinkOut  int
}

func (rc *recvState) setup(p sessionPkt, out *os.File) error {
	g, err := newGeometry(int64(p.Size), int(p.ShardSize), int(p.K), int(p.M))
	if err != nil {
		return err
	}
	enc, err := codec(g.k, g.m)
	if err != nil {
		return err
	}
	if rc.partial {
		// nothing to map: stripes are buffered until complete
	} else if err := out.Truncate(g.size); err != nil {
		return err
	}
	if g.size > 0 && !rc.partial {
		if rc.omap, err = mapOutput(out, g.size); err != nil {
			return err
		}
		rc.data = rc.omap.data
	}
	rc.g, rc.enc, rc.sess = g, enc, p
	rc.have = make([][4]uint64, g.stripes)
	rc.count = make([]uint16, g.stripes)
	rc.dataHave = make([]uint16, g.stripes)
	rc.nakRound = make([]uint32, g.stripes)
	rc.gotRound = make([]uint32, g.stripes)
	rc.parity = map[int64][][]byte{}
	for s := range g.stripes {
		rc.count[s] = uint16(g.k - g.dataIn(s))
		if g.dataIn(s) == 0 {
			rc.complete++
		}
	}
	if rc.partial {
		if err := rc.setupPartial(); err != nil {
			return err
		}
	}
	rc.r.Size.Store(g.size)
	rc.noteSHA(p)
	return rc.join(p)
}

func (rc *recvState) unmap() {
	if rc.data != nil {
		rc.omap.unmap()
		rc.data, rc.omap = nil, outputMap{}
	}
	if rc.dc != nil {
		rc.dc.Close()
	}
}

func (rc *recvState) noteSHA(p sessionPkt) {
	if p.Flags&flagSHA != 0 {
		rc.sha, rc.shaOK = p.SHA256, true
	}
}

// join opens the group socket for session p (replacing any earlier one).
func (rc *recvState) join(p sessionPkt) error {
	if rc.dc != nil {
		rc.dc.Close()
		rc.dc = nil
	}
	listen := rc.r.listenData
	if listen == nil {
		listen = listenGroup
	}
	dc, err := listen(p.Group, rc.ifi)
	if err != nil {
		return err
	}
	rc.dc, rc.sess, rc.heard = dc, p, time.Now()
	rc.seen, rc.idle = false, p.Flags&flagIdle != 0
	return nil
}

// listenGroup opens the group's socket (joinGroupSocket), upgraded for
// batched reads with GRO.
func listenGroup(group netip.AddrPort, ifi *net.Interface) (dataConn, error) {
	uc, err := joinGroupSocket(group, ifi)
	if err != nil {
		return nil, err
	}
	c, err := udpio.New(uc, udpio.Options{RcvBuf: 16 << 20})
	if err != nil {
		uc.Close()
		return nil, err
	}
	c.EnableGRO()
	return c, nil
}

// run reads the stream until every stripe is complete and the digest
// matches, sending status reports (with NAKs) every NAK interval.
func (rc *recvState) run(ctx context.Context, timeout time.Duration) error {
	rc.ctlIn = make(chan ctlPkt, 16)
	go rc.readCtl()
	if rc.partial {
		rc.startSink()
		defer rc.stopSink()
	}
	const batch = 64
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 65536) // GRO hands over up to 64 KiB of segments
	}
	pkts := make([]udpio.Packet, 256)
	lastHeard := time.Now()
	rc.lastStatus = time.Now()
	status := make([]byte, 0, 8192)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rc.partial {
			rc.pumpSink()
			if rc.complete == rc.g.stripes || rc.sinkErr != nil {
				return rc.finishPartial(ctx)
			}
		}
		if !rc.partial && rc.complete == rc.g.stripes && rc.shaOK {
			return rc.finish(ctx)
		}
		now := time.Now()
		if now.Sub(lastHeard) > timeout {
			return fmt.Errorf("mtftp: nothing from the server for %v (%d of %d stripes held)", timeout, rc.complete, rc.g.stripes)
		}
		// The session ended without us (it dropped us as silent, or shut
		// down) or went quiet: ask again. A new session carries on with
		// what is held; a server that is gone runs into the timeout.
		if (rc.closed || now.Sub(lastHeard) > sessionLostAfter) && now.Sub(rc.asked) > time.Second {
			rc.asked = now
			rc.r.Log.Debug().Bool("closed", rc.closed).Msg("mtftp: session lost, asking again")
			rc.ctl.WriteToUDPAddrPort(rc.rrq, rc.origin)
		}
		ivl := time.Duration(max(20, min(1000, int(rc.sess.NakInterval)))) * time.Millisecond
		next := rc.lastStatus.Add(ivl)
		if !now.Before(next) {
			status = rc.sendStatus(status, now)
			next = now.Add(ivl/2 + rand.N(ivl)) // jitter spreads many receivers
		}
		rc.dc.SetReadDeadline(next)
		n, err := rc.dc.ReadBatch(bufs, pkts)
		if err != nil && !isTimeout(err) {
			return err
		}
		if n > 0 {
			lastHeard = time.Now()
		}
		for _, p := range pkts[:n] {
			if p.Src.Addr() != rc.srv.Addr() {
				continue // only the server's datagrams count on a shared group
			}
			rc.heard = time.Now()
			rc.packet(p.Data)
		}
		if time.Since(rc.heard) > rejoinAfter {
			// Heartbeats come every 200 ms: hearing none, the membership
			// did not get through (a lost IGMP report behind a snooping
			// switch). Joining again sends a fresh report.
			rc.r.Log.Debug().Str("group", rc.sess.Group.String()).Msg("mtftp: nothing from the group, joining again")
			if err := rc.join(rc.sess); err != nil {
				return err
			}
		}
		for drained := false; !drained; {
			select {
			case c, ok := <-rc.ctlIn:
				if !ok {
					return errors.New("mtftp: control socket closed")
				}
				lastHeard = time.Now()
				if err := rc.control(c); err != nil {
					return err
				}
			default:
				drained = true
			}
		}
	}
}

// doneWaits are the waits for the server's DONEACK before DONE goes out
// again; after the last the receiver stops asking (a server that ended
// the session with this DONE closed its socket). A DONE sent once or
// twice and lost left the server waiting 5 s for a silent receiver and
// counting it dropped, not completed (docs/native-multicast.md,
// "Finishing").
var doneWaits = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}

// sendDone tells the server the download is over (ok: verified) and
// waits for its DONEACK, sending DONE again after each of doneWaits.
func (rc *recvState) sendDone(ctx context.Context, ok bool) {
	done := appendDone(nil, rc.sess.ID, rc.tok, ok)
	for _, wait := range doneWaits {
		rc.ctl.WriteToUDPAddrPort(done, rc.srv)
		if rc.awaitDoneAck(ctx, wait) {
			return
		}
	}
}

// awaitDoneAck waits up to d for the server's DONEACK.
func (rc *recvState) awaitDoneAck(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case c, open := <-rc.ctlIn:
			if !open {
				return true // the socket is closed: nothing more to say
			}
			if c.from == rc.srv && isDoneAck(c.b, rc.sess.ID) {
				return true
			}
		case <-t.C:
			return false
		case <-ctx.Done():
			return true
		}
	}
}

// readCtl forwards the session socket's unicast packets (moves, errors).
func (rc *recvState) readCtl() {
	buf := make([]byte, 2048)
	rc.ctl.SetReadDeadline(time.Time{})
	for {
		n, from, err := rc.ctl.ReadFromUDPAddrPort(buf)
		if err != nil {
			close(rc.ctlIn)
			return
		}
		if from.Addr().Unmap() != rc.srv.Addr() {
			continue
		}
		select {
		case rc.ctlIn <- ctlPkt{netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), append([]byte(nil), buf[:n]...)}:
		default:
		}
	}
}

type ctlPkt struct {
	from netip.AddrPort
	b    []byte
}

func (rc *recvState) control(c ctlPkt) error {
	b := c.b
	switch nativeOp(b) {
	case uint16(tftp.OpERROR):
		code, msg, err := tftp.ParseError(b)
		if err != nil {
			return errors.New("mtftp: malformed ERROR from server")
		}
		return &tftp.RemoteError{Code: code, Message: msg}
	case uint16(tftp.OpOACK), uint16(tftp.OpDATA):
		// Asked again, the server now answers by unicast TFTP.
		rc.ctl.WriteToUDPAddrPort(tftp.AppendError(nil, tftp.ErrCodeOptionRefuse, "native multicast only"), c.from)
		return ErrNativeUnsupported
	case opNativeWantAck:
		if c.from == rc.srv {
			rc.wantAcked(b)
		}
		return nil
	case opNativeChallenge:
		// Asking again after the cookie's epoch: echo the new one.
		if tok, err := parseChallenge(b); err == nil && tok != rc.tok {
			rc.tok = tok
			rc.rrq = rc.r.rrq(rc.remote, rc.partial, tok)
			rc.ctl.WriteToUDPAddrPort(rc.rrq, rc.origin)
		}
		return nil
	case opNativeSession:
		p, err := parseSession(b)
		if err != nil {
			return err
		}
		if p.ID == rc.sess.ID {
			rc.noteSHA(p)
			return nil
		}
		// A move order, or the answer to asking again: another session
		// of the same file carries on with what is held.
		if p.Size != uint64(rc.g.size) || int(p.ShardSize) != rc.g.shard || int(p.K) != rc.g.k || int(p.M) != rc.g.m || p.Interleave != nativeInterleave ||
			(rc.shaOK && p.Flags&flagSHA != 0 && p.SHA256 != rc.sha) {
			return errors.New("mtftp: the file changed on the server during the download")
		}
		if p.Flags&flagMove != 0 {
			rc.r.Log.Info().Str("group", p.Group.String()).Uint32("rate_KBps", p.RateKBps).Msg("mtftp: moved to a slower stream")
			rc.res.Moves++
		} else {
			rc.r.Log.Info().Str("group", p.Group.String()).Msg("mtftp: joined a new session of the file")
			rc.res.Rejoins++
		}
		rc.closed = false
		rc.noteSHA(p)
		// The new session's socket sent the order; report there from now on.
		rc.srv = c.from
		rc.pktSeen = false
		if err := rc.join(p); err != nil {
			return err
		}
		if rc.partial {
			rc.newSessionPartial()
		}
		return nil
	}
	return nil
}

// packet handles one datagram from the group.
func (rc *recvState) packet(b []byte) {
	if nativeOp(b) == opNativeSession {
		p, err := parseSession(b)
		if err != nil || p.ID != rc.sess.ID {
			return
		}
		rc.noteSHA(p)
		rc.idle = p.Flags&flagIdle != 0
		rc.closed = p.Flags&flagClosed != 0
		if !rc.seen {
			rc.firstSeq, rc.seen = p.Seq, true
		}
		rc.curSeq = max(rc.curSeq, p.Seq)
		rc.sess.NakInterval = p.NakInterval
		return
	}
	h, payload, ok := parseDataHdr(b)
	if !ok || h.ID != rc.sess.ID {
		return
	}
	g := rc.g
	var st int64
	rc.countLoss(h.Seq)
	if h.Op == opNativeData {
		pos := uint64(h.Pos)
		st = int64(pos % uint64(g.stripes))
		rc.track(pos)
	} else {
		st = int64(h.Pos)
		if st >= g.stripes {
			return
		}
	}
	rc.store(st, int(h.Shard), payload)
}

// countLoss measures loss from the gaps in the datagram numbers (sent in
// order; a late one after its gap was counted is not subtracted).
func (rc *recvState) countLoss(seq uint32) {
	rc.seenPkts++
	if rc.pktSeen && seq-rc.lastPkt-1 < 1<<20 {
		rc.lostShards += int64(seq - rc.lastPkt - 1)
	}
	if !rc.pktSeen || int32(seq-rc.lastPkt) > 0 {
		rc.lastPkt, rc.pktSeen = seq, true
	}
}

// track notes how far the carousel has come since this receiver joined:
// firstSeq is the start of the interleave group it joined in (what it
// missed of that group it NAKs once the group has passed), curSeq the
// start of the group under way (the groups before it have passed).
func (rc *recvState) track(pos uint64) {
	gs := groupStart(pos, rc.g.stripes)
	if !rc.seen {
		rc.firstSeq, rc.seen = gs, true
	}
	rc.curSeq = max(rc.curSeq, gs)
}

// groupStart is the start of the interleave group holding position pos.
func groupStart(pos uint64, stripes int64) uint64 {
	pass := pos - pos%uint64(stripes)
	return pass + (pos-pass)/nativeInterleave*nativeInterleave
}

// store keeps shard i of stripe st and completes the stripe when it can.
func (rc *recvState) store(st int64, i int, payload []byte) {
	g := rc.g
	rc.gotRound[st] = rc.round
	if i >= g.k+g.m || rc.have[st][i/64]&(1<<(i%64)) != 0 {
		rc.res.Duplicate++
		return
	}
	if rc.dataHave[st] == uint16(g.dataIn(st)) {
		rc.res.Duplicate++ // the stripe is complete
		return
	}
	if i < g.k {
		if i >= g.dataIn(st) {
			return
		}
		_, n := g.span(st, i)
		if len(payload) != n {
			return
		}
		dst := rc.shardBytes(st, i)
		if dst == nil {
			// Over the partial budget: lost to this receiver, and
			// reported so (its repair allowance and the stream's rate
			// must know it could not take this shard).
			rc.lostShards++
			return
		}
		copy(dst, payload)
		rc.dataHave[st]++
		rc.r.Held.Add(int64(n))
	} else {
		if len(payload) != g.shard {
			return
		}
		if rc.partial {
			// Parity counts against the budget too, and only for a
			// stripe that has its buffer: kept without one, K parity
			// shards could never rebuild it (and REPAIRs forged on the
			// group would pile up).
			if rc.stripeBuf(st) == nil || rc.bufBytes+int64(g.shard) > partialBudget {
				rc.lostShards++ // as above
				return
			}
			rc.bufBytes += int64(g.shard)
		}
		ps := rc.parity[st]
		if ps == nil {
			ps = make([][]byte, g.m)
			rc.parity[st] = ps
		}
		ps[i-g.k] = append([]byte(nil), payload...)
	}
	rc.have[st][i/64] |= 1 << (i % 64)
	rc.count[st]++
	rc.res.Shards++
	rc.gotBytes += int64(len(payload))
	switch {
	case rc.dataHave[st] == uint16(g.dataIn(st)):
		rc.completeStripe(st)
	case int(rc.count[st]) >= g.k:
		rc.rebuild(st)
	}
}

func (rc *recvState) completeStripe(st int64) {
	if rc.partial {
		for _, p := range rc.parity[st] {
			rc.bufBytes -= int64(len(p))
		}
	}
	delete(rc.parity, st)
	rc.complete++
	if rc.partial {
		rc.deliverStripe(st)
	}
}

// rebuild recovers the stripe's missing data shards from the K it holds,
// writing them straight into the mapped file where they are whole.
func (rc *recvState) rebuild(st int64) {
	g := rc.g
	shards := make([][]byte, g.k+g.m)
	pad := make([]byte, 0, (g.k-g.dataIn(st))*g.shard) // never grown: shards alias it
	short := -1
	if rc.partial && rc.stripeBuf(st) == nil {
		return // over the partial budget: asked for again later
	}
	for i := range g.k {
		_, n := g.span(st, i)
		held := rc.have[st][i/64]&(1<<(i%64)) != 0
		switch {
		case i >= g.dataIn(st): // past the file's end: zeros
			pad = pad[:len(pad)+g.shard]
			shards[i] = pad[len(pad)-g.shard:]
		case n < g.shard: // the final short block
			short = i
			if held {
				b := make([]byte, g.shard)
				copy(b, rc.shardBytes(st, i))
				shards[i] = b
			}
		case held:
			shards[i] = rc.shardBytes(st, i)
		default:
			shards[i] = rc.shardBytes(st, i)[:0] // rebuilt in place
		}
	}
	copy(shards[g.k:], rc.parity[st])
	if err := rc.enc.ReconstructData(shards); err != nil {
		rc.r.Log.Warn().Err(err).Int64("stripe", st).Msg("mtftp: rebuild failed")
		return
	}
	for i := range g.dataIn(st) {
		if rc.have[st][i/64]&(1<<(i%64)) != 0 {
			continue
		}
		_, n := g.span(st, i)
		dst := rc.shardBytes(st, i)
		if i == short {
			copy(dst, shards[i][:n])
		} else if &shards[i][0] != &dst[0] {
			copy(dst, shards[i])
		}
		rc.have[st][i/64] |= 1 << (i % 64)
		rc.res.Rebuilt++
		rc.r.Held.Add(int64(n))
	}
	rc.dataHave[st] = uint16(g.dataIn(st))
	rc.completeStripe(st)
}

// sendStatus reports loss and rate and NAKs the incomplete stripes the
// stream has passed since this receiver joined (or all of them once the
// carousel is idle); the rest come round on the next pass anyway.
func (rc *recvState) sendStatus(b []byte, now time.Time) []byte {
	g := rc.g
	rc.round++
	dt := now.Sub(rc.lastStatus).Seconds()
	st := statusPkt{ID: rc.sess.ID, Token: rc.tok, Complete: uint32(rc.complete), FirstSeq: uint32(rc.firstSeq),
		Seen: uint32(min(rc.seenPkts, 1<<32-1)), Lost: uint32(min(rc.lostShards, 1<<32-1))}
	if dt > 0 {
		st.GoodKBps = uint32(min(float64(rc.gotBytes)/1024/dt, 1<<32-1))
	}
	rc.res.Lost += rc.lostShards
	rc.seenPkts, rc.lostShards, rc.gotBytes = 0, 0, 0
	rc.lastStatus = now
	naks := make([]nak, 0, 4*maxStatusNaks) // up to four packets a round
	if rc.partial {
		rc.sendWants() // the segments not acknowledged yet
	}
	if rc.seen || rc.idle || rc.partial {
		full := rc.idle || rc.curSeq >= rc.firstSeq+uint64(g.stripes)
		// A partial download asks only for the stripes it has room for:
		// while its budget is taken (by stripes waiting for a slow sink)
		// a repair for a stripe without a buffer would be dropped as it
		// arrives, and asked for again, round after round (measured: 10×
		// the file in repairs for a sink stuck 10 s).
		room := int64(partialBudget) - rc.bufBytes
		for j := range g.stripes {
			s := (rc.nakFrom + j) % g.stripes
			if rc.dataHave[s] == uint16(g.dataIn(s)) {
				continue
			}
			if rc.partial {
				if !rc.passedPartial(s) {
					continue
				}
				if _, held := rc.bufs[s]; !held {
					if room < int64(g.k*g.shard) {
						continue
					}
					room -= int64(g.k * g.shard)
				}
			} else if !full {
				// its first position in the carousel from firstSeq on
				p := rc.firstSeq + uint64((s-int64(rc.firstSeq%uint64(g.stripes))+g.stripes)%g.stripes)
				if p >= rc.curSeq {
					continue // not passed whole since this receiver joined
				}
			}
			if rc.nakRound[s] != 0 && (rc.round-rc.nakRound[s] < 3 || rc.round-rc.gotRound[s] < 2) {
				continue // asked recently, or its repair is still arriving
			}
			rc.nakRound[s] = rc.round
			lacks := ^rc.have[s][0]
			if d := g.dataIn(s); d < 64 {
				lacks &= 1<<d - 1
			}
			// An incomplete stripe always asks for at least one shard (a
			// stripe holding K shards that could not be rebuilt yet must
			// not fall silent).
			naks = append(naks, nak{uint32(s), uint16(max(1, g.k-int(rc.count[s]))), lacks})
			if len(naks) == cap(naks) {
				rc.nakFrom = (s + 1) % g.stripes
				break
			}
		}
	}
	rc.res.Naks += int64(len(naks))
	rc.r.Log.Debug().Int64("complete", rc.complete).Int64("stripes", g.stripes).Bool("idle", rc.idle).Uint64("first", rc.firstSeq).
		Uint64("cur", rc.curSeq).Int("naks", len(naks)).Uint32("seen", st.Seen).Uint32("lost", st.Lost).Uint32("good_KBps", st.GoodKBps).Msg("mtftp: status")
	for first := true; first || len(naks) > 0; first = false {
		st.Naks = naks[:min(len(naks), maxStatusNaks)]
		naks = naks[len(st.Naks):]
		b = appendStatus(b[:0], &st)
		rc.ctl.WriteToUDPAddrPort(b, rc.srv)
	}
	return b
}

// finish checks the digest and tells the server.
func (rc *recvState) finish(ctx context.Context) error {
	sum := sha256.Sum256(rc.data)
	ok := sum == rc.sha
	rc.sendDone(ctx, ok)
	rc.res.SHA256 = hex.EncodeToString(sum[:])
	if rc.data != nil {
		if err := rc.omap.flush(); err != nil {
			return err
		}
	}
	if !ok {
		return fmt.Errorf("mtftp: SHA-256 mismatch: got %x, server says %x", sum, rc.sha)
	}
	return nil
}
