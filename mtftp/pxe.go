package mtftp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/tftp"
)

// pxeServer is the PXE MTFTP listener (protocols.md §7.4): it answers an
// RRQ by starting a pass of the whole file to the group, driven by the
// requester's ACKs, and sends everything from its own socket (SPORT), which
// is where clients filter DATA from and send ACKs to.
type pxeServer struct {
	s     *Server
	c     conn
	group netip.AddrPort
	t     timing

	pass *pxePass
	buf  []byte
}

// pxePass is one pass of one file.
type pxePass struct {
	file     *filestore.File
	data     []byte
	name     string
	client   netip.AddrPort // the acknowledging client
	cur      uint16         // block outstanding
	last     uint16
	tries    int
	sentAt   time.Time
	resent   bool
	rto      rto.Estimator
	start    time.Time
	deadline time.Time
	blocks   int
	repairs  int
	wire     int64
	ignored  int
	view     *sessionView
}

func (p *pxeServer) run(ctx context.Context) error {
	p.buf = make([]byte, tftp.HeaderLen+PXEBlockSize)
	stop := context.AfterFunc(ctx, func() { p.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	defer func() {
		if p.pass != nil {
			p.end("shutdown", ctx.Err())
		}
	}()
	rbuf := make([]byte, 2048)
	for {
		if ctx.Err() != nil {
			return nil
		}
		var dl time.Time
		if p.pass != nil {
			dl = p.pass.sentAt.Add(p.pass.rto.RTO())
			if p.pass.deadline.Before(dl) {
				dl = p.pass.deadline
			}
		}
		p.c.SetReadDeadline(dl)
		n, from, err := p.c.ReadFrom(rbuf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if !isTimeout(err) {
				return err
			}
			p.timeout()
			continue
		}
		p.packet(rbuf[:n], from)
	}
}

func (p *pxeServer) packet(b []byte, from netip.AddrPort) {
	s := p.s
	switch op := tftp.PacketOpcode(b); {
	case op == tftp.OpRRQ:
		p.request(b, from)
	case p.pass != nil && from == p.pass.client && op == tftp.OpACK:
		n, err := tftp.ParseAck(b)
		if err != nil {
			s.Counters.BadPacket.Add(1)
			return
		}
		p.ack(n)
	case p.pass != nil && from == p.pass.client && op == tftp.OpERROR:
		p.end("aborted", errors.New("client sent ERROR"))
	case op == tftp.OpACK || op == tftp.OpERROR:
		// ACKs from anyone but the acknowledging client are ignored
		// (protocols.md §7.4 rule 7): a late client's ACK of an old pass.
		s.Counters.UnknownPeer.Add(1)
	default:
		s.Counters.BadPacket.Add(1)
		if len(b) >= 4 {
			p.c.WriteTo(tftp.AppendError(nil, tftp.ErrCodeIllegalOp, ""), from)
		}
	}
}

func (p *pxeServer) request(b []byte, from netip.AddrPort) {
	s := p.s
	req, err := tftp.ParseRequest(b)
	if err != nil || req.Op != tftp.OpRRQ {
		s.Counters.BadPacket.Add(1)
		p.refuse(b, from, tftp.ErrCodeIllegalOp, "only RRQ")
		return
	}
	if p.pass != nil {
		// A pass is running: send nothing; the client listens and
		// re-opens after it if it still has gaps (rule 5).
		p.pass.ignored++
		s.Counters.PXEIgnored.Add(1)
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
	if f.Size() > PXEMaxSize {
		// 16-bit block numbers at 512 bytes; the client falls back to
		// plain TFTP on an ERROR.
		f.Release()
		s.Counters.PXERefused.Add(1)
		p.refuse(b, from, tftp.ErrCodeUndefined, "file too big for MTFTP")
		s.Log.Info().Str("client", from.String()).Str("file", req.Filename).Msg("mtftp: PXE request refused: file over 33553920 bytes")
		return
	}
	now := time.Now()
	p.pass = &pxePass{
		file: f, data: f.Data(), name: f.Name(), client: from,
		last: uint16(tftp.BlockCount(f.Size(), PXEBlockSize)), rto: newRTO(p.t),
		start: now, deadline: now.Add(p.t.lifetime),
	}
	p.pass.view = s.track(Session{
		Dialect: "pxe", File: req.Filename, Group: p.group, BlockSize: PXEBlockSize,
		Size: f.Size(), Blocks: int(p.pass.last), Start: now,
	})
	p.pass.view.setReceivers([]Receiver{{Addr: from, Master: true}})
	s.Counters.Passes.Add(1)
	s.Counters.ActivePasses.Add(1)
	// Options are ignored (rule 2). DATA 1 goes to the requester and to
	// the group (rule 3).
	if err := p.send(1, false, true); err != nil {
		p.end("file-changed", err)
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

func (p *pxeServer) ack(n uint16) {
	ps := p.pass
	if n != ps.cur {
		p.s.Counters.BadPacket.Add(1) // stale or duplicate: lock-step only moves on the outstanding block
		return
	}
	if !ps.resent {
		ps.rto.Sample(time.Since(ps.sentAt))
	}
	if n == ps.last {
		p.end("ok", nil)
		return
	}
	ps.tries = 0
	ps.rto.Progress()
	if err := p.send(n+1, false, false); err != nil {
		p.end("file-changed", err)
	}
}

func (p *pxeServer) timeout() {
	ps := p.pass
	if ps == nil {
		return
	}
	if !time.Now().Before(ps.deadline) {
		p.end("lifetime", fmt.Errorf("pass lifetime %s exceeded", p.t.lifetime))
		return
	}
	p.s.Counters.Timeouts.Add(1)
	ps.tries++
	ps.rto.Timeout()
	if ps.tries > p.t.retries {
		p.end("timeout", fmt.Errorf("%d timeouts", ps.tries))
		return
	}
	// Block 1 goes to the requester again too: without its unicast copy
	// it cannot know it is the acknowledging client.
	if err := p.send(ps.cur, true, ps.cur == 1); err != nil {
		p.end("file-changed", err)
	}
}

func (p *pxeServer) send(n uint16, retransmit, unicast bool) error {
	ps := p.pass
	pkt, err := buildData(p.buf, ps.data, n, PXEBlockSize)
	if err != nil {
		return err
	}
	ps.cur, ps.sentAt, ps.resent = n, time.Now(), retransmit
	ps.view.block(n, retransmit)
	if retransmit {
		ps.repairs++
		p.s.Counters.Repairs.Add(1)
	}
	// The unicast copy goes first: a client that sees the group's copy
	// of DATA 1 first concludes another client opened the pass and stays
	// passive (atftp's client does, protocols.md §7.3), and then nobody
	// ACKs.
	dsts := []netip.AddrPort{p.group}
	if unicast {
		dsts = []netip.AddrPort{ps.client, p.group}
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

// end finishes the pass with its log line.
func (p *pxeServer) end(outcome string, err error) {
	ps := p.pass
	p.pass = nil
	if ps == nil {
		return
	}
	if err != nil && errors.Is(err, errFileChanged) {
		p.c.WriteTo(tftp.AppendError(nil, tftp.ErrCodeUndefined, errFileChanged.Error()), ps.client)
	}
	ps.file.Release()
	p.s.untrack(ps.view)
	p.s.Counters.ActivePasses.Add(-1)
	ev := p.s.Log.Info()
	if outcome != "ok" {
		ev = p.s.Log.Warn()
	}
	ev.Str("file", ps.name).Str("client", ps.client.String()).Str("group", p.group.String()).
		Int64("size", int64(len(ps.data))).Int("blocks_sent", ps.blocks).Int("repairs", ps.repairs).
		Int("requests_ignored", ps.ignored).Int64("bytes_on_wire", ps.wire).Dur("duration", time.Since(ps.start)).
		Str("outcome", outcome).Err(err).Msg("mtftp pass")
}
