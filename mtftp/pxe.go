package mtftp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/loglimit"
	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/tftp"
)

// DefaultPXERequestRate is the PXE MTFTP listener's request limit per
// client address when Server.RequestLimiter is nil, with a burst of twice
// that: tftp.max_requests_per_sec's default. A PXE ROM opens a pass a few
// times at most (it re-opens after its listen and delay timers, DHCP
// option 43.4/43.5: seconds apart), so it only bites on floods.
const DefaultPXERequestRate = 100

// pxeServer is the PXE MTFTP listener (docs/protocols.md §7.4): it answers an
// RRQ by starting a pass of the whole file to the file's group, driven by
// the requester's ACKs, and sends everything from its own socket (SPORT),
// which is where clients filter DATA from and send ACKs to. Passes on
// different groups run at once; one goroutine owns them all (a pass is
// lock-step, so it waits on its client far more than it sends).
type pxeServer struct {
	s      *Server
	c      conn
	t      timing
	passes map[netip.AddrPort]*pxePass // running passes by group
	buf    []byte
	limit  *tftp.SourceLimiter
	logs   loglimit.Limiter // what a flood can trigger: one line per kind per 10 s
}

// pxePass is one pass of one file.
type pxePass struct {
	file     *filestore.File
	data     []byte
	name     string
	group    netip.AddrPort
	client   netip.AddrPort // the acknowledging client
	cur      uint16         // block outstanding
	last     uint16
	tries    int
	sentAt   time.Time
	resent   bool
	ahead    bool // block 2 went out after a timeout on block 1 (timeout)
	rto      rto.Estimator
	start    time.Time
	deadline time.Time
	blocks   int
	repairs  int
	wire     int64
	ignored  int
	view     *sessionView
}

func newPXEServer(s *Server, c conn) *pxeServer {
	limit := s.RequestLimiter
	if limit == nil {
		limit = tftp.NewSourceLimiter(DefaultPXERequestRate, 0)
	}
	return &pxeServer{s: s, c: c, t: s.timing(), passes: map[netip.AddrPort]*pxePass{},
		buf: make([]byte, tftp.HeaderLen+PXEBlockSize), limit: limit}
}

func (p *pxeServer) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	defer func() {
		for _, ps := range p.passes {
			p.end(ps, tftp.OutcomeShutdown, ctx.Err())
		}
	}()
	rbuf := make([]byte, 2048)
	for {
		if ctx.Err() != nil {
			return nil
		}
		p.c.SetReadDeadline(p.nextDeadline())
		n, from, err := p.c.ReadFrom(rbuf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !isTimeout(err) {
			return err
		}
		if err == nil {
			p.packet(rbuf[:n], from)
		}
		// After every packet too: a busy pass must not starve the
		// timers of the others.
		p.expire(time.Now())
	}
}

// nextDeadline is the earliest retransmission or lifetime deadline of the
// running passes; zero (none) when idle.
func (p *pxeServer) nextDeadline() time.Time {
	var dl time.Time
	for _, ps := range p.passes {
		d := ps.sentAt.Add(ps.rto.RTO())
		if ps.deadline.Before(d) {
			d = ps.deadline
		}
		if dl.IsZero() || d.Before(dl) {
			dl = d
		}
	}
	return dl
}

func (p *pxeServer) expire(now time.Time) {
	for _, ps := range p.passes {
		if !now.Before(ps.deadline) || !now.Before(ps.sentAt.Add(ps.rto.RTO())) {
			p.timeout(ps)
		}
	}
}

func (p *pxeServer) packet(b []byte, from netip.AddrPort) {
	s := p.s
	switch op := tftp.PacketOpcode(b); op {
	case tftp.OpRRQ:
		// Limited per source like the TFTP port's requests: each one may
		// start a pass or buy an ERROR (issue 13, finding 14).
		if now := time.Now(); !p.limit.Allow(from.Addr(), now) {
			p.rateLimited(from, now)
			return
		}
		p.request(b, from)
	case tftp.OpACK:
		n, err := tftp.ParseAck(b)
		if err != nil {
			s.Counters.BadPacket.Add(1)
			return
		}
		ps := p.passOf(from, n)
		if ps == nil {
			// ACKs from anyone but the acknowledging client are
			// ignored (docs/protocols.md §7.4 rule 7): a late client's
			// ACK of an old pass.
			s.Counters.UnknownPeer.Add(1)
			return
		}
		p.ack(ps, n)
	case tftp.OpERROR:
		if ps := p.passOf(from, 0); ps != nil {
			p.end(ps, tftp.OutcomeAborted, errors.New("client sent ERROR"))
			return
		}
		s.Counters.UnknownPeer.Add(1)
	default:
		s.Counters.BadPacket.Add(1)
		// The ERROR is a reply to anyone: limited like requests, and
		// never larger than what came in (5 bytes).
		if len(b) >= 5 && p.limit.Allow(from.Addr(), time.Now()) {
			p.c.WriteTo(tftp.AppendError(nil, tftp.ErrCodeIllegalOp, ""), from)
		}
	}
}

// rateLimited counts a request dropped by the per-source limiter and logs
// it at most once every 10 s, with how many were held back since.
func (p *pxeServer) rateLimited(from netip.AddrPort, now time.Time) {
	p.s.Counters.RateLimited.Add(1)
	p.logLimited(zerolog.WarnLevel, now, "rate-limited", func(e *zerolog.Event) {
		e.Str("client", from.Addr().String()).Int("max_requests_per_sec", p.limit.Rate()).
			Msg("mtftp: PXE requests over the per-client rate limit dropped unanswered")
	})
}

// logLimited logs a line of kind (a code constant) at most once every
// 10 s, with "suppressed": the lines held back since (issue 13, finding 15).
func (p *pxeServer) logLimited(lvl zerolog.Level, now time.Time, kind string, log func(*zerolog.Event)) {
	if ok, n := p.logs.Allow(kind, now); ok {
		log(p.s.Log.WithLevel(lvl).Uint64("suppressed", n))
	}
}

// passOf finds the pass whose acknowledging client is from; one client
// socket driving two passes is resolved by the block it ACKs.
func (p *pxeServer) passOf(from netip.AddrPort, ack uint16) *pxePass {
	var found *pxePass
	for _, ps := range p.passes {
		if ps.client == from {
			if ps.cur == ack {
				return ps
			}
			found = ps
		}
	}
	return found
}

func (p *pxeServer) request(b []byte, from netip.AddrPort) {
	s := p.s
	req, err := tftp.ParseRequest(b)
	if err != nil || req.Op != tftp.OpRRQ {
		s.Counters.BadPacket.Add(1)
		p.refuse(b, from, tftp.ErrCodeIllegalOp, "only RRQ")
		return
	}
	group := s.pxeGroupOf(req.Filename)
	if ps := p.passes[group]; ps != nil {
		if name, _ := filestore.CleanName(req.Filename); name == ps.name {
			if ps.cur == 1 && ps.tries > 0 {
				p.handover(ps, from)
				return
			}
			// This file's pass is running: send nothing; the client
			// listens and re-opens after it if it still has gaps
			// (rule 5).
			ps.ignored++
			s.Counters.PXEIgnored.Add(1)
			return
		}
		// iPXE's fixed group carries another file: its DATA carries no
		// name, so this client would take those blocks for its own.
		// Refuse now: an ERROR before any DATA, and TFTP works.
		s.Counters.PXERefused.Add(1)
		p.refuse(b, from, tftp.ErrCodeUndefined, "MTFTP group busy with another file, use TFTP")
		s.Log.Debug().Str("client", from.String()).Str("file", req.Filename).Str("busy_with", ps.name).
			Msg("mtftp: PXE request refused: the group is busy with another file")
		return
	}
	if req.Mode != "octet" {
		s.Counters.PXERefused.Add(1)
		p.refuse(b, from, tftp.ErrCodeIllegalOp, "MTFTP needs octet mode")
		return
	}
	f, err := s.Files.Get(req.Filename)
	if err != nil {
		s.Counters.PXERefused.Add(1)
		code, msg := tftp.ErrCodeAccess, "access violation"
		if errors.Is(err, filestore.ErrNotFound) {
			code, msg = tftp.ErrCodeNotFound, "file not found"
		}
		p.refuse(b, from, code, msg)
		s.Log.Debug().Str("client", from.String()).Str("file", req.Filename).Err(err).Msg("mtftp: PXE request refused")
		return
	}
	if size := f.Size(); size > PXEMaxSize {
		// 16-bit block numbers at 512 bytes; the client falls back to
		// plain TFTP on an ERROR.
		f.Release()
		s.Counters.PXERefused.Add(1)
		p.refuse(b, from, tftp.ErrCodeUndefined, "file too big for MTFTP")
		p.logLimited(zerolog.InfoLevel, time.Now(), "too-big", func(e *zerolog.Event) {
			e.Str("client", from.String()).Str("file", req.Filename).Int64("size", size).
				Msgf("mtftp: PXE request refused: over %d bytes (65535 blocks of 512), use TFTP", int64(PXEMaxSize))
		})
		return
	}
	now := time.Now()
	ps := &pxePass{
		file: f, data: f.Data(), name: f.Name(), group: group, client: from,
		last: uint16(tftp.BlockCount(f.Size(), PXEBlockSize)), rto: newRTO(p.t),
		start: now, deadline: now.Add(p.t.lifetime),
	}
	ps.view = s.track(Session{
		Dialect: "pxe", File: req.Filename, Group: group, BlockSize: PXEBlockSize,
		Size: f.Size(), Blocks: int(ps.last), Start: now,
	})
	ps.view.setReceivers([]Receiver{{Addr: from, Master: true}})
	p.passes[group] = ps
	s.Counters.Passes.Add(1)
	s.Counters.ActivePasses.Add(1)
	// Options are ignored (rule 2). DATA 1 goes to the requester and to
	// the group (rule 3).
	if err := p.send(ps, 1, false, true); err != nil {
		p.end(ps, tftp.OutcomeFileChanged, err)
	}
}

// handover gives a pass that never got past DATA 1 to the client whose
// RRQ just came in (docs/protocols.md §7.4, rule 5): its requester let a
// timeout pass without an ACK, so it is gone (its file completed while
// its RRQ was on the way, the machine went off) or was a forged source.
// Ignoring the new requester would leave the group to a pass nobody
// drives for the whole retry budget (from a 1 s RTO with no sample yet,
// 15 s), while every listener hears DATA 1 and 2 again, stays passive and
// spends its opens. Nothing was delivered past block 1, so starting over
// for the new requester loses nothing; the silent one's ACKs, should it
// be alive after all, are ignored (rule 7), and it listens to the pass.
func (p *pxeServer) handover(ps *pxePass, from netip.AddrPort) {
	p.s.Counters.PXEHandovers.Add(1)
	p.s.Log.Debug().Str("file", ps.name).Str("silent", ps.client.String()).Str("client", from.String()).
		Msg("mtftp: PXE pass handed to a new requester: the last one never acknowledged DATA 1")
	ps.client, ps.tries, ps.rto = from, 0, newRTO(p.t)
	ps.view.setReceivers([]Receiver{{Addr: from, Master: true}})
	if err := p.send(ps, 1, true, true); err != nil {
		p.end(ps, tftp.OutcomeFileChanged, err)
	}
}

// refuse answers a request on the listening socket, never with more bytes
// than the request had (no amplification for a spoofed source).
func (p *pxeServer) refuse(req []byte, to netip.AddrPort, code tftp.ErrorCode, msg string) {
	b := tftp.AppendError(nil, code, msg)
	if len(b) > len(req) {
		b = tftp.AppendError(nil, code, "")
		if len(b) > len(req) {
			return
		}
	}
	p.c.WriteTo(b, to)
}

func (p *pxeServer) ack(ps *pxePass, n uint16) {
	switch {
	case n == ps.cur:
	case ps.ahead && n == ps.cur+1:
		ps.cur = n // block 2 sent after a timeout on block 1 (timeout)
	case n+1 == ps.cur:
		return // the ACK of the block re-sent before cur after a timeout
	default:
		p.s.Counters.BadPacket.Add(1) // stale or duplicate: lock-step only moves on the outstanding block
		return
	}
	if !ps.resent {
		ps.rto.Sample(time.Since(ps.sentAt))
	}
	if n == ps.last {
		p.end(ps, tftp.OutcomeOK, nil)
		return
	}
	ps.tries = 0
	ps.rto.Progress()
	if err := p.send(ps, n+1, false, false); err != nil {
		p.end(ps, tftp.OutcomeFileChanged, err)
	}
}

func (p *pxeServer) timeout(ps *pxePass) {
	if !time.Now().Before(ps.deadline) {
		p.end(ps, tftp.OutcomeLifetime, fmt.Errorf("pass lifetime %s exceeded", p.t.lifetime))
		return
	}
	p.s.Counters.Timeouts.Add(1)
	ps.tries++
	ps.rto.Timeout()
	if ps.tries > p.t.retries {
		p.end(ps, tftp.OutcomeTimeout, fmt.Errorf("%d timeouts", ps.tries))
		return
	}
	// atftp's client (0.8.0) ACKs a block number only once, also on its
	// own timeouts (tftp_mtftp.c, last_ackd_block: meant for DATA 1's
	// unicast and multicast copies). When its ACK of cur is lost it
	// ignores every repeat of cur and the pass dies. It does ACK a block
	// other than the one it ACKed last: so the block before cur goes
	// first (the client holds it: its ACK is why cur was sent), then cur,
	// which it then ACKs again. Both are the file's own blocks under their
	// own numbers: no client, listening or acknowledging, can be misled.
	// A spec client ACKs both (docs/protocols.md §7.3); the first is ignored.
	if ps.cur > 1 {
		if err := p.transmit(ps, ps.cur-1, true, false); err != nil {
			p.end(ps, tftp.OutcomeFileChanged, err)
			return
		}
	}
	// Block 1 goes to the requester again too: without its unicast copy
	// it cannot know it is the acknowledging client.
	if err := p.send(ps, ps.cur, true, ps.cur == 1); err != nil {
		p.end(ps, tftp.OutcomeFileChanged, err)
		return
	}
	// Before block 1 there is none: block 2 follows instead, and its ACK
	// counts for both. Only a client in RECEIVE ACKs, and RECEIVE begins
	// with the unicast DATA 1 written (atftp, PXE spec): an ACK of 2 comes
	// from a client that holds block 1.
	if ps.cur == 1 && ps.last >= 2 {
		if err := p.transmit(ps, 2, true, false); err != nil {
			p.end(ps, tftp.OutcomeFileChanged, err)
			return
		}
		ps.ahead = true
	}
}

// send makes block n the outstanding one and transmits it.
func (p *pxeServer) send(ps *pxePass, n uint16, retransmit, unicast bool) error {
	ps.cur, ps.sentAt, ps.resent, ps.ahead = n, time.Now(), retransmit, false
	ps.view.block(n, retransmit)
	return p.transmit(ps, n, retransmit, unicast)
}

// transmit sends block n to the group (and first to the acknowledging
// client with unicast); the outstanding block does not change.
func (p *pxeServer) transmit(ps *pxePass, n uint16, retransmit, unicast bool) error {
	pkt, err := buildData(p.buf, ps.data, n, PXEBlockSize)
	if err != nil {
		return err
	}
	if retransmit {
		ps.repairs++
		p.s.Counters.Repairs.Add(1)
	}
	// The unicast copy goes first: a client that sees the group's copy
	// of DATA 1 first concludes another client opened the pass and stays
	// passive (atftp's client does, docs/protocols.md §7.3), and then nobody
	// ACKs.
	dsts := []netip.AddrPort{ps.group}
	if unicast {
		dsts = []netip.AddrPort{ps.client, ps.group}
	}
	for _, d := range dsts {
		ps.blocks++
		ps.wire += int64(len(pkt))
		p.s.Counters.DataSent.Add(1)
		p.s.Counters.BytesSent.Add(uint64(len(pkt)))
		if err := p.c.WriteTo(pkt, d); err != nil {
			p.s.Counters.SendErrors.Add(1)
		}
	}
	return nil
}

// end finishes a pass with its log line and frees its group.
func (p *pxeServer) end(ps *pxePass, outcome tftp.Outcome, err error) {
	if p.passes[ps.group] != ps {
		return
	}
	delete(p.passes, ps.group)
	if err != nil && errors.Is(err, errFileChanged) {
		p.c.WriteTo(tftp.AppendError(nil, tftp.ErrCodeUndefined, errFileChanged.Error()), ps.client)
	}
	ps.file.Release()
	p.s.untrack(ps.view)
	p.s.Counters.ActivePasses.Add(-1)
	ev := p.s.Log.Info()
	if outcome != tftp.OutcomeOK {
		ev = p.s.Log.Warn()
	}
	ev.Str("file", ps.name).Str("client", ps.client.String()).Str("group", ps.group.String()).
		Int64("size", int64(len(ps.data))).Int("blocks_sent", ps.blocks).Int("repairs", ps.repairs).
		Int("requests_ignored", ps.ignored).Int64("bytes_on_wire", ps.wire).Dur("duration", time.Since(ps.start)).
		Str("outcome", string(outcome)).Err(err).Msg("mtftp pass")
}
