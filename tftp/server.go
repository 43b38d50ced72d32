package tftp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/loglimit"
	"github.com/mtftpd/mtftpd/internal/rto"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// Defaults for the zero values of Server fields.
const (
	DefaultMaxWindow      = 64      // RFC 7440 allows 65535; 64 fills one GSO/sendmmsg batch
	DefaultMaxWindowBytes = 4 << 20 // 64 × 65464-byte blocks
	DefaultInitialRTO     = time.Second
	DefaultMinRTO         = 20 * time.Millisecond // docs/protocols.md §1.7: absolute floor under the measured one
	DefaultMaxRTO         = 8 * time.Second
	DefaultRetries        = 6 // RFC 7440 §6 example
	DefaultMaxSessions    = 1024
	DefaultMaxPerClient   = 16
	DefaultLifetime       = time.Hour
	DefaultStallTimeout   = 30 * time.Second // silence tolerated from a peer that was heard
)

// MulticastHandler takes read requests carrying the RFC 2090 "multicast"
// option (the mtftp package implements it). ServeMulticast runs in the
// request's own goroutine, with the request's session slot held: it either
// returns false at once, having sent nothing, and the request is served by
// unicast (the multicast option is then not acknowledged), or it serves the
// client and returns true when that client is done. ctx is cancelled when
// the server stops transfers.
type MulticastHandler interface {
	ServeMulticast(ctx context.Context, req *Request, peer netip.AddrPort, local netip.Addr) bool
}

// VirtualFiles makes read-only files that are not in Files: per-host
// templates (pxelinux.cfg/01-<mac>, grub.cfg) rendered for the asking
// machine. Render is asked first for every read request, in the request's
// own goroutine, and must be safe for concurrent use. ok false means name
// is not one of its files and the request goes to Files as usual. With ok
// true, data is the whole file (the server keeps it only for the
// transfer), or err says why there is none: an error wrapping
// filestore.ErrNotFound answers "file not found" (pxelinux then tries its
// next name), any other answers "access violation" and is logged.
type VirtualFiles interface {
	Render(name string, client netip.AddrPort, local netip.Addr) (data []byte, ok bool, err error)
}

// optMulticast is RFC 2090's option name.
const optMulticast = "multicast"

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("tftp: server closed")

// Server is a unicast TFTP server. Configure it through its fields before
// Serve; a zero field means the documented default. It is safe to call
// Shutdown from another goroutine.
type Server struct {
	// Files serves read requests. Required.
	Files *filestore.Store
	// WriteDir enables write requests into that directory; "" refuses
	// them (ERROR 2). Uploads land in a temp file renamed into place
	// after the last block.
	WriteDir string
	// AllowOverwrite lets an upload replace an existing file (else ERROR 6).
	AllowOverwrite bool
	// MaxUploadSize caps one upload in bytes; 0 means 1 GiB.
	MaxUploadSize int64
	// WriteQuota caps the bytes in WriteDir, its files and running
	// uploads together; an upload that would pass it gets ERROR 3 (disk
	// full). 0 = DefaultWriteQuota, negative = no quota.
	WriteQuota int64

	MaxBlockSize int // blksize cap, 8..65464; 0 = 65464, lowered further to the interface MTU − 32
	// AllowFragments skips the MTU clamp: a client asking for 65464-byte
	// blocks gets them, as IP fragments. Faster on a clean LAN without a
	// window; on a lossy or rate-limited link one lost fragment loses the
	// whole block (docs/lab-notes.md, "Fragments"), so it is off by
	// default.
	AllowFragments bool
	MaxWindow      int // windowsize cap; 0 = DefaultMaxWindow
	MaxWindowBytes int // bytes in one window; 0 = DefaultMaxWindowBytes

	InitialRTO, MinRTO, MaxRTO time.Duration // 0 = the Default* values
	Retries                    int           // consecutive timeouts before a transfer is dropped; 0 = DefaultRetries
	// StallTimeout is how long a transfer whose client has answered before
	// may stay silent before it is dropped (on top of Retries); a request
	// never answered is dropped after a few retries. 0 = DefaultStallTimeout.
	StallTimeout time.Duration

	MaxSessions     int           // confirmed transfers at once; 0 = DefaultMaxSessions
	MaxPerClient    int           // confirmed transfers at once per client IP; 0 = DefaultMaxPerClient
	SessionLifetime time.Duration // hard cap per transfer; 0 = DefaultLifetime

	// A request is unconfirmed until its client answers from its address
	// (the first ACK of a read, the first DATA of a write): until then its
	// source may be spoofed. Unconfirmed requests do not count in
	// MaxSessions and MaxPerClient but in a pool of their own, of at most
	// MaxUnconfirmed requests and MaxUnconfirmedPerPrefix per /24 (IPv4)
	// or /64; when either is full, the oldest is evicted and ends without
	// a word. One that is not confirmed within ConfirmTimeout ends too.
	// Zero values mean DefaultMaxUnconfirmed,
	// DefaultMaxUnconfirmedPerPrefix and DefaultConfirmTimeout.
	MaxUnconfirmed          int
	MaxUnconfirmedPerPrefix int
	ConfirmTimeout          time.Duration

	// MaxRequestRate limits requests per second from one client IP
	// (token bucket; requests over it get no answer at all, so spoofed
	// floods buy nothing); 0 = unlimited. RequestBurst is the bucket size;
	// 0 = 2 × MaxRequestRate. A PXE boot sends a few dozen requests at
	// most (pxelinux's config probes), so the limit only bites on floods.
	MaxRequestRate int
	RequestBurst   int

	// Multicast, if set, is offered every RRQ that carries the RFC 2090
	// "multicast" option before it is served by unicast.
	Multicast MulticastHandler

	// Virtual, if set, is asked for every read request before Files; its
	// files are served by unicast only.
	Virtual VirtualFiles

	// SinglePort serves every read transfer from the listening port, in
	// one event loop per listening socket, instead of one goroutine and
	// one socket (a new TID) per transfer (docs/design.md, "Single-port
	// mode"). Off by default. Uploads, netascii and multicast requests
	// are still served from their own port.
	SinglePort bool

	// Log receives lifecycle events and one line per finished transfer.
	Log zerolog.Logger

	// Counters count every packet's fate; read them at any time.
	Counters Counters

	// dial opens a transfer socket; tests replace it.
	dial func(local netip.Addr) (conn, error)

	mu        sync.Mutex
	ln        *udpio.Conn
	wakeLoops func()                   // single port: wakes the event loops (loop.go)
	perClient map[netip.Addr]int       // confirmed transfers per client
	confirmed int                      // confirmed transfers
	pending   pendingPool              // unconfirmed requests (slots.go)
	peers     map[netip.AddrPort]*slot // client TIDs with a request running
	sessions  sync.WaitGroup
	active    atomic.Int64 // requests running, confirmed or not
	closing   atomic.Bool
	stopAll   context.CancelFunc
	sessCtx   context.Context
	mtus      mtuCache
	writeRoot *os.Root
	quota     uploadQuota
	transfers registry
	limiter   SourceLimiter
	logs      loglimit.Limiter // refusals: one line per kind per 10 s
	rtoPeak   rto.Shared       // the largest recent round trip of any transfer (docs/protocols.md §1.7)
}

func (s *Server) timing() timing {
	s.mu.Lock()
	defer s.mu.Unlock()
	return timing{
		InitialRTO:     orDefault(s.InitialRTO, DefaultInitialRTO),
		MinRTO:         orDefault(s.MinRTO, DefaultMinRTO),
		MaxRTO:         orDefault(s.MaxRTO, DefaultMaxRTO),
		Retries:        orDefault(s.Retries, DefaultRetries),
		Lifetime:       orDefault(s.SessionLifetime, DefaultLifetime),
		StallTimeout:   orDefault(s.StallTimeout, DefaultStallTimeout),
		ConfirmTimeout: orDefault(s.ConfirmTimeout, DefaultConfirmTimeout),
		peak:           &s.rtoPeak,
	}
}

// orDefault is v, or d when v is zero or negative: a zero field means the
// documented default.
func orDefault[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// ListenAndServe listens on addr ("127.0.0.1:6969", ":69", "[::1]:6969";
// "[::]:69" is dual-stack, udpio.Network) and serves.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenUDP(udpio.Network("udp", ua.AddrPort().Addr()), ua)
	if err != nil {
		return err
	}
	return s.Serve(ctx, pc)
}

// Serve answers requests arriving on pc until ctx is cancelled (running
// transfers are stopped with an ERROR) or Shutdown is called (they finish
// until Shutdown's deadline). It takes ownership of pc. With SinglePort
// it is ServeSinglePort on pc alone.
func (s *Server) Serve(ctx context.Context, pc *net.UDPConn) error {
	if s.SinglePort {
		return s.ServeSinglePort(ctx, []*net.UDPConn{pc})
	}
	ln, err := s.open(pc)
	if err != nil {
		return err
	}
	if err := s.prepare(ln, nil); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.closing.Store(true)
		s.mu.Unlock()
		ln.Close()
		s.stopAll()
	})
	defer stop()

	buf := make([]byte, 65536)
	for {
		n, from, dst, err := ln.ReadFrom(buf)
		if err != nil {
			if s.closing.Load() {
				s.sessions.Wait()
				if ctx.Err() != nil {
					return nil
				}
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.Log.Warn().Err(err).Msg("tftp: read")
			continue
		}
		s.handle(buf[:n], from, dst)
	}
}

// open upgrades a listening socket; it closes pc on failure.
func (s *Server) open(pc *net.UDPConn) (*udpio.Conn, error) {
	if s.Files == nil {
		pc.Close()
		return nil, errors.New("tftp: Server.Files is nil")
	}
	// SndBuf: a single-port loop never waits for send-buffer room
	// (udpio.Conn.WriteMessages), so the buffer must hold its rounds and
	// the answers to forged sources waiting ~3 s in ARP or neighbour
	// discovery (docs/security.md, "TFTP").
	ln, err := udpio.New(pc, udpio.Options{RcvBuf: 4 << 20, SndBuf: transferSocketBuffer, Pktinfo: true, RxqOverflow: true})
	if err != nil {
		pc.Close()
		return nil, err
	}
	return ln, nil
}

// prepare sets the server up to serve on ln (nil: the event loops' test
// network): its tables, the write directory and the limiter. wake, set
// in single-port mode, wakes the event loops (Shutdown). On failure it
// closes ln.
func (s *Server) prepare(ln *udpio.Conn, wake func()) error {
	s.mu.Lock()
	s.ln = ln
	s.wakeLoops = wake
	s.perClient = make(map[netip.Addr]int)
	s.peers = make(map[netip.AddrPort]*slot)
	s.sessCtx, s.stopAll = context.WithCancel(context.Background())
	if s.dial == nil {
		s.dial = dialTransfer
	}
	if s.WriteDir != "" && s.writeRoot == nil {
		r, err := os.OpenRoot(s.WriteDir)
		if err != nil {
			s.mu.Unlock()
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("tftp: write directory: %w", err)
		}
		s.writeRoot = r
		// Temp files a crash left behind are removed (a running server
		// renames or removes its own), and what is there counts in the
		// quota (issue 13, finding 11).
		stored, removed := scanWriteDir(r, true)
		s.quota.stored, s.quota.measured = stored, time.Now()
		s.quota.measure = func() int64 { n, _ := scanWriteDir(r, false); return n }
		s.Log.Info().Str("write_dir", s.WriteDir).Int64("stored", stored).Int("stale_temp_files_removed", removed).
			Msg("tftp: write directory ready")
	}
	s.setLimiter()
	s.mu.Unlock()
	if ln != nil {
		caps := ln.Caps()
		s.Log.Info().Str("addr", ln.LocalAddr().String()).Bool("gso", caps.GSO).Bool("sendmmsg", caps.MMsg).
			Bool("gso_equal_tail_guard", caps.GSOEqualTailBug).Str("kernel", caps.KernelRelease).
			Str("root", s.Files.Root()).Str("write_dir", s.WriteDir).Bool("single_port", s.SinglePort).
			Msg("tftp server listening")
	}
	return nil
}

// Shutdown stops accepting requests, lets running transfers finish until
// ctx is done, then stops the rest with an ERROR packet.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ln, wake := s.ln, s.wakeLoops
	stopAll := s.stopAll
	// Under mu: reserve (which adds to sessions) sees closing, so no
	// session can start after the Wait below has begun.
	s.closing.Store(true)
	s.mu.Unlock()
	if wake != nil {
		wake() // single port: the loops keep reading for running transfers
	} else if ln == nil {
		return nil
	} else {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		stopAll()
		<-done
		return ctx.Err()
	}
}

// Active reports the number of transfers in flight.
func (s *Server) Active() int { return int(s.active.Load()) }

// handle parses a datagram that arrived on the listening port and, for a
// valid request within limits, starts its transfer.
func (s *Server) handle(pkt []byte, from netip.AddrPort, dst netip.Addr) {
	req, sl, reply := s.admit(pkt, from, dst)
	if reply != nil {
		s.ln.WriteTo(reply, from, dst)
	}
	if sl != nil {
		s.spawn(sl, req, len(pkt), from, dst)
	}
}

// spawn serves an admitted request in its own goroutine, from its own
// transfer socket.
func (s *Server) spawn(sl *slot, req *Request, reqLen int, from netip.AddrPort, dst netip.Addr) {
	go func() {
		defer s.sessions.Done()
		defer s.release(sl)
		s.serveRequest(sl, req, reqLen, from, dst)
	}()
}

// admit checks a datagram that arrived on the listening port: a valid
// request within the rate and session limits gets a slot (sl), for which
// the caller must start a transfer; otherwise reply, if not nil, is the
// refusal the caller sends from the listening port.
func (s *Server) admit(pkt []byte, from netip.AddrPort, dst netip.Addr) (req *Request, sl *slot, reply []byte) {
	op := PacketOpcode(pkt)
	if op != OpRRQ && op != OpWRQ {
		s.Counters.BadPacket.Add(1)
		return nil, nil, nil // nothing to say to a stray DATA/ACK on the request port
	}
	now := time.Now()
	if !s.limiter.Allow(from.Addr(), now) {
		s.rateLimited(from, now, s.limiter.Rate())
		return nil, nil, nil
	}
	// ParseRequest refuses a request over 512 bytes before reading it
	// and reads at most MaxOptions options (issue 13, finding 4).
	req, err := ParseRequest(pkt)
	if err != nil {
		s.Counters.BadRequest.Add(1)
		s.Log.Debug().Str("client", from.String()).Err(err).Msg("tftp: bad request")
		// Never more bytes than the request had: a spoofed packet must
		// not buy a bigger reply (amplification).
		return nil, nil, cappedError(ErrCodeIllegalOp, "malformed request", len(pkt))
	}
	sl, dup, refusal := s.reserve(from)
	if dup {
		// The client repeated its request before our first reply reached
		// it: the running session answers; a second one would only
		// compete with it for the same client TID.
		s.Counters.DupRequest.Add(1)
		return nil, nil, nil
	}
	if sl == nil {
		s.Counters.SessionLimited.Add(1)
		s.logLimited(zerolog.WarnLevel, now, "session-limit", func(e *zerolog.Event) {
			e.Str("client", from.String()).Str("file", req.Filename).Msg("tftp: session limit reached, request refused")
		})
		// A short fixed reply: at most one small packet per request, and
		// no larger than a minimal RRQ plus a few bytes.
		return nil, nil, AppendError(nil, ErrCodeUndefined, refusal.Error())
	}
	return req, sl, nil
}

// rateLimited counts a request refused by the per-source limiter and logs
// it at most once every 10 s, with how many were dropped since: a flood
// must not turn into a flood of log lines.
func (s *Server) rateLimited(from netip.AddrPort, now time.Time, rate int) {
	s.Counters.RateLimited.Add(1)
	s.logLimited(zerolog.WarnLevel, now, "rate-limited", func(e *zerolog.Event) {
		e.Str("client", from.Addr().String()).Int("max_requests_per_sec", rate).
			Msg("tftp: requests over the per-client rate limit dropped unanswered")
	})
}

// logLimited logs a line of kind (a code constant) at most once every
// 10 s, with "suppressed": the lines of that kind held back since.
// Anything a flood can trigger once per packet logs through it (issue 13,
// finding 15); the counters still count every packet.
func (s *Server) logLimited(lvl zerolog.Level, now time.Time, kind string, log func(*zerolog.Event)) {
	if ok, n := s.logs.Allow(kind, now); ok {
		log(s.Log.WithLevel(lvl).Uint64("suppressed", n))
	}
}

// setLimiter applies MaxRequestRate and RequestBurst; s.mu is held.
func (s *Server) setLimiter() {
	s.limiter.SetRate(s.MaxRequestRate, s.RequestBurst)
	quota := s.WriteQuota
	if quota == 0 {
		quota = DefaultWriteQuota
	}
	s.quota.setLimit(quota)
}

// Reconfigure changes the server's limits while it runs: f is called with
// the server locked and may set MaxRequestRate, RequestBurst,
// MaxSessions, MaxPerClient, MaxUnconfirmed, MaxUnconfirmedPerPrefix,
// ConfirmTimeout, the RTO fields, Retries, StallTimeout,
// SessionLifetime, MaxBlockSize, AllowFragments, MaxWindow,
// MaxWindowBytes, AllowOverwrite, MaxUploadSize and WriteQuota. New requests see the
// new values; running transfers keep what they negotiated. Other fields
// must not be touched.
func (s *Server) Reconfigure(f func(*Server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
	s.setLimiter()
}

// cappedError builds an ERROR packet of at most limit bytes: without its
// message if the message does not fit, nil if not even that fits. The
// refusal of a malformed request is capped at the request's length, since
// its source address may be spoofed (amplification).
func cappedError(code ErrorCode, msg string, limit int) []byte {
	b := AppendError(nil, code, msg)
	if len(b) > limit {
		b = AppendError(b[:0], code, "")
		if len(b) > limit {
			return nil
		}
	}
	return b
}

// serveRequest runs in the transfer's own goroutine: it opens the transfer
// socket (a new TID, RFC 1350 §4) on the address the request came to,
// resolves the file, negotiates and runs the transfer. reqLen is the
// request's size on the wire: the refusal of a malformed one is no larger.
// sl is the request's slot: the session confirms it when the client first
// answers, and stops silently when it is evicted (sl.ctx).
func (s *Server) serveRequest(sl *slot, req *Request, reqLen int, peer netip.AddrPort, local netip.Addr) {
	if evicted(sl.ctx) {
		return // before any file or socket is opened for it
	}
	var vf servedFile
	var verr error
	if req.Op == OpRRQ && s.Virtual != nil {
		if data, ok, err := s.Virtual.Render(req.Filename, peer, local); ok {
			vf, verr = memFile(data), err
		}
	}
	// Virtual files are per-host: multicast would send one host's file to
	// every member of the group.
	if vf == nil && req.Op == OpRRQ && s.Multicast != nil && s.serveMulticast(sl, req, peer, local) {
		return
	}
	c, err := s.dial(local)
	if q, ok := c.(interface{ Queued() bool }); ok && err == nil {
		s.setAnswered(sl, q.Queued)
	}
	if err != nil {
		// Out of file descriptors, say: one line per 10 s, not per request.
		s.logLimited(zerolog.ErrorLevel, time.Now(), "transfer-socket", func(e *zerolog.Event) {
			e.Err(err).Str("client", peer.String()).Msg("tftp: transfer socket")
		})
		return
	}
	defer c.Close()
	fail := func(code ErrorCode, msg string) {
		c.WriteTo(AppendError(nil, code, msg), peer)
	}
	if req.Mode != "octet" && req.Mode != "netascii" {
		// Malformed: capped like the listener's own refusals, since its
		// message quotes the request and could outgrow it.
		s.Counters.BadRequest.Add(1)
		s.logRefusal(req, peer, "bad-mode", nil)
		if b := cappedError(ErrCodeIllegalOp, fmt.Sprintf("unsupported mode %q", req.Mode), reqLen); b != nil {
			c.WriteTo(b, peer)
		}
		return
	}
	if req.Op == OpWRQ {
		s.serveWrite(sl, c, req, peer, local)
		return
	}
	var f servedFile
	if vf != nil {
		f, err = vf, verr
	} else {
		f, err = s.Files.Get(req.Filename)
	}
	if err != nil {
		// Logged before answering: the client's next request (pxelinux's
		// next config name) only follows our ERROR, so the log keeps the
		// request order.
		fail(s.refuseRead(req, peer, err))
		return
	}
	defer f.Release()
	s.serveRead(sl, c, req, f, peer, local, fail)
}

// serveMulticast hands a read request asking for multicast to the
// multicast handler; true if it took the request (or the request was
// refused), false to serve it by unicast.
func (s *Server) serveMulticast(sl *slot, req *Request, peer netip.AddrPort, local netip.Addr) bool {
	if _, ok := req.Option(optMulticast); !ok || !peer.Addr().Is4() {
		// Multicast is IPv4 only (docs/design.md, "IPv6"): an IPv6
		// client asking for it is served by unicast, the option
		// unacknowledged (RFC 2090 lets a server ignore it).
		return false
	}
	// The multicast handler runs its own sessions and rules for who may
	// join; its requests count as confirmed here.
	if s.confirm(sl) != nil {
		return true
	}
	if s.Multicast.ServeMulticast(s.sessCtx, req, peer, local) {
		s.Counters.Multicast.Add(1)
		return true
	}
	return false
}

// serveRead negotiates a read request for the opened file f and runs its
// session on c.
func (s *Server) serveRead(sl *slot, c conn, req *Request, f servedFile, peer netip.AddrPort, local netip.Addr, fail func(ErrorCode, string)) {
	var err error
	s.Counters.RRQ.Add(1)

	netascii := req.Mode == "netascii"
	size := f.Size()
	var src blockSource
	lim := s.limits(local)
	lim.Netascii = netascii
	neg := Negotiate(req, lim, size)
	if netascii {
		if size, err = f.NetasciiSize(); err != nil {
			fail(ErrCodeUndefined, errFileChanged.Error())
			return
		}
		neg = Negotiate(req, lim, size)
		r := &filestore.NetasciiReader{}
		r.Reset(f.Data())
		src = &netasciiSource{r: r, blksize: neg.BlockSize}
	} else {
		src = &mappedSource{data: f.Data(), blksize: neg.BlockSize}
	}
	var oack []byte
	if len(neg.Ack) > 0 {
		oack = AppendOACK(nil, neg.Ack)
	}
	l := s.transfers.start(Transfer{
		Client: peer, Op: "read", File: req.Filename, Size: size,
		BlockSize: neg.BlockSize, WindowSize: neg.WindowSize, Start: time.Now(),
	})
	rs := &readSession{
		c: c, peer: peer, src: src, size: size, neg: neg, oack: oack,
		timing: s.timing(), counters: &s.Counters, truncated: f.Truncated, prog: &l.prog,
		confirm: func() error { return s.confirm(sl) },
	}
	res := rs.run(sl.ctx)
	s.transfers.end(l, res, res.RTO)
	s.finish(req, peer, neg, res)
}

// servedFile is what a read request sends: a *filestore.File (the
// mapping) or a memFile from VirtualFiles.
type servedFile interface {
	Size() int64
	Data() []byte
	NetasciiSize() (int64, error)
	Truncated() bool
	Release()
}

// memFile is a VirtualFiles result: bytes that belong to this transfer
// alone, so they can neither change nor be truncated under it.
type memFile []byte

func (m memFile) Size() int64                  { return int64(len(m)) }
func (m memFile) Data() []byte                 { return m }
func (m memFile) NetasciiSize() (int64, error) { return filestore.NetasciiLen(m), nil }
func (m memFile) Truncated() bool              { return false }
func (m memFile) Release()                     {}

// limits returns the negotiation limits for a request that arrived on
// local: blksize is capped to that interface's MTU less the headers
// (dataOverhead), so DATA never needs IP fragmentation (docs/protocols.md
// §3.2).
func (s *Server) limits(local netip.Addr) Limits {
	mtu := s.mtus.lookup(local)
	s.mu.Lock()
	defer s.mu.Unlock()
	maxBlk := orDefault(s.MaxBlockSize, MaxBlockSize)
	if mtu > 0 && !s.AllowFragments {
		maxBlk = min(maxBlk, mtu-dataOverhead(local))
	}
	return Limits{
		MaxBlockSize:   max(maxBlk, MinBlockSize),
		MaxWindow:      orDefault(s.MaxWindow, DefaultMaxWindow),
		MaxWindowBytes: orDefault(s.MaxWindowBytes, DefaultMaxWindowBytes),
	}
}

// dataOverhead is what a DATA packet to a client of local's family adds
// to its block: the IP header (20 bytes IPv4, RFC 791; 40 IPv6, RFC 8200
// §3), UDP's 8 and TFTP's 4. 1500 - 32 = 1468 over IPv4, 1500 - 52 = 1448
// over IPv6.
func dataOverhead(local netip.Addr) int {
	if local.Is6() && !local.Is4In6() {
		return 40 + 8 + 4
	}
	return 20 + 8 + 4
}

// fileErrorCode maps a filestore error to the RFC 1350 code, the message
// for the client and a short reason for the log.
func fileErrorCode(err error) (ErrorCode, string, string) {
	switch {
	case errors.Is(err, filestore.ErrNotFound):
		return ErrCodeNotFound, "file not found", "not-found"
	case errors.Is(err, filestore.ErrBadName):
		return ErrCodeAccess, "invalid file name", "bad-name"
	default:
		return ErrCodeAccess, "access violation", "denied"
	}
}

// logRefusal logs a refused request. reason is one of a fixed set (the
// limiter's kinds).
func (s *Server) logRefusal(req *Request, peer netip.AddrPort, reason string, err error) {
	line := func(ev *zerolog.Event) {
		ev.Str("client", peer.String()).Str("op", req.Op.String()).Str("file", req.Filename).
			Str("outcome", reason).Err(err).Msg("tftp: refused")
	}
	// pxelinux probes a dozen config names before it finds one (01-<mac>,
	// the hex IP shortened a digit at a time, default): misses are normal
	// traffic, logged at debug. Other
	// refusals are at most one line per reason per 10 s: anyone can send
	// a thousand of them a second.
	if reason == "not-found" {
		line(s.Log.Debug())
		return
	}
	s.logLimited(zerolog.InfoLevel, time.Now(), "refused-"+reason, line)
}

// finish counts and logs a finished transfer: the one line per transfer
// that people read.
func (s *Server) finish(req *Request, peer netip.AddrPort, neg Negotiated, res result) {
	switch res.Outcome {
	case OutcomeOK:
		s.Counters.Completed.Add(1)
	case OutcomeUnconfirmed:
		s.Counters.Unconfirmed.Add(1)
	case OutcomeProbe:
		s.Counters.Probes.Add(1)
	case OutcomeEvicted: // counted when evicted
	case OutcomeBusy:
		s.Counters.SessionLimited.Add(1)
	default:
		s.Counters.Failed.Add(1)
	}
	d := res.End.Sub(res.Start)
	mbps := 0.0
	if d > 0 {
		mbps = float64(res.Bytes) / d.Seconds() / 1e6
	}
	line := func(ev *zerolog.Event) {
		ev.Str("client", peer.String()).Str("op", req.Op.String()).Str("file", req.Filename).Str("mode", req.Mode).
			Int("blksize", neg.BlockSize).Int("windowsize", neg.WindowSize).
			Int64("bytes", res.Bytes).Uint64("blocks", res.Blocks).Uint64("retransmits", res.Retransmits).
			Uint64("datagrams", res.Datagrams).Uint64("syscalls", res.Syscalls).
			Dur("duration", d).Float64("mbps", mbps).Str("outcome", string(res.Outcome)).Err(res.Err).
			Msg("transfer")
	}
	switch {
	case res.Outcome == OutcomeOK || res.Outcome == OutcomeUnconfirmed || res.Outcome == OutcomeProbe:
		line(s.Log.Info())
	case res.Outcome == OutcomeEvicted:
		line(s.Log.Debug()) // a flood's requests: counted, not logged one by one
	case res.Outcome == OutcomeBusy:
		s.logLimited(zerolog.WarnLevel, time.Now(), "session-limit", line)
	case !res.Heard:
		// Never answered: a spoofed request, or a client that went
		// away; whether it timed out or its first reply could not be
		// sent (single-port mode answers a broadcast request from the
		// broadcast address, which the kernel refuses), a flood must
		// not become a flood of log lines.
		s.logLimited(zerolog.WarnLevel, time.Now(), "never-answered", line)
	default:
		line(s.Log.Warn())
	}
}

// serveWrite runs a WRQ.
func (s *Server) serveWrite(sl *slot, c conn, req *Request, peer netip.AddrPort, local netip.Addr) {
	fail := func(code ErrorCode, msg, reason string, err error) {
		s.Counters.Denied.Add(1)
		s.logRefusal(req, peer, reason, err)
		c.WriteTo(AppendError(nil, code, msg), peer)
	}
	if s.writeRoot == nil {
		fail(ErrCodeAccess, "write requests are disabled", "writes-disabled", nil)
		return
	}
	if req.Mode != "octet" {
		fail(ErrCodeIllegalOp, "uploads must use octet mode", "bad-mode", nil)
		return
	}
	name, err := filestore.CleanName(req.Filename)
	if err != nil {
		fail(ErrCodeAccess, "invalid file name", "bad-name", err)
		return
	}
	s.mu.Lock()
	overwrite, maxSize := s.AllowOverwrite, s.MaxUploadSize
	s.mu.Unlock()
	if !overwrite {
		if _, err := s.writeRoot.Lstat(name); err == nil {
			fail(ErrCodeFileExists, "file already exists", "exists", nil)
			return
		}
	}
	if maxSize <= 0 {
		maxSize = 1 << 30
	}
	lim := s.limits(local)
	neg := Negotiate(req, lim, -1)
	if neg.TSize > maxSize {
		c.WriteTo(AppendError(nil, ErrCodeDiskFull, errTooLarge.Error()), peer)
		s.logRefusal(req, peer, "too-large", nil)
		return
	}
	if room := s.quota.room(); room >= 0 && neg.TSize > room {
		c.WriteTo(AppendError(nil, ErrCodeDiskFull, errQuota.Error()), peer)
		s.logRefusal(req, peer, "over-quota", nil)
		return
	}
	// The temp file is created when the first DATA comes from the peer's
	// address (it is not spoofed), never for the request alone.
	open := func() (upload, error) {
		up, err := s.newUpload(name, overwrite)
		if err != nil {
			s.Counters.Denied.Add(1)
			s.logRefusal(req, peer, "create-failed", err)
			return nil, err
		}
		return up, nil
	}
	s.Counters.WRQ.Add(1)
	var oack []byte
	if len(neg.Ack) > 0 {
		oack = AppendOACK(nil, neg.Ack)
	}
	l := s.transfers.start(Transfer{
		Client: peer, Op: "write", File: req.Filename, Size: neg.TSize,
		BlockSize: neg.BlockSize, WindowSize: neg.WindowSize, Start: time.Now(),
	})
	ws := &writeSession{
		c: c, peer: peer, neg: neg, oack: oack, timing: s.timing(),
		counters: &s.Counters, open: open, maxSize: maxSize, prog: &l.prog,
		confirm: func() error { return s.confirm(sl) },
	}
	res := ws.run(sl.ctx)
	s.transfers.end(l, res, res.RTO)
	s.finish(req, peer, neg, res)
}

// rootUpload writes into a temp file beside the target inside the write
// root; Commit fsyncs and renames it into place, so a broken upload leaves
// nothing behind (docs/design.md, "Safety rules").
type rootUpload struct {
	f         *atomicfile.File
	root      *os.Root
	name      string
	overwrite bool
	quota     *uploadQuota
	reserved  int64 // bytes taken from the quota: the file's size so far
}

func (s *Server) newUpload(name string, overwrite bool) (*rootUpload, error) {
	dir, base := path.Split(name)
	// "." + name + ".part-" + 12 hex digits: isUploadTemp knows it.
	f, err := atomicfile.CreateIn(s.writeRoot, name, dir+"."+base+".part-*", 0o644)
	if err != nil {
		return nil, err
	}
	return &rootUpload{f: f, root: s.writeRoot, name: name, overwrite: overwrite, quota: &s.quota}, nil
}

// WriteAt writes p at off, first taking from the quota what it adds to
// the file (errQuota when that would pass it).
func (u *rootUpload) WriteAt(p []byte, off int64) (int, error) {
	if grow := off + int64(len(p)) - u.reserved; grow > 0 {
		if !u.quota.take(grow) {
			return 0, errQuota
		}
		u.reserved += grow
	}
	return u.f.WriteAt(p, off)
}

// Commit puts the upload in place; the client is told it succeeded only
// after the directory entry is on disk. Without overwrite a name that
// appeared meanwhile is never replaced (errExists).
func (u *rootUpload) Commit() error {
	var replaced int64
	var err error
	if u.overwrite {
		if fi, serr := u.root.Lstat(u.name); serr == nil && fi.Mode().IsRegular() {
			replaced = fi.Size()
		}
		err = u.f.Commit()
	} else {
		err = u.f.CommitNew()
	}
	switch {
	case err == nil || errors.Is(err, atomicfile.ErrSyncDir):
		u.committed(replaced) // in place, durable or not
	case errors.Is(err, fs.ErrExist):
		return errExists
	}
	return err
}

// committed moves the upload's bytes in the quota from running to stored.
func (u *rootUpload) committed(replaced int64) {
	u.quota.commit(u.reserved, replaced)
	u.reserved = 0
}

// errExists: the upload's name appeared while it ran (ERROR 6).
var errExists = errors.New("file already exists")

func (u *rootUpload) Abort() {
	u.f.Abort()
	u.quota.give(u.reserved)
	u.reserved = 0
}

// mtuCache maps a local address to its interface MTU, refreshed at most
// every 30 s (interfaces change rarely; a netlink dump per request would
// cost more than the transfer of a small file).
type mtuCache struct {
	mu     sync.Mutex
	at     time.Time
	byAddr map[netip.Addr]int
}

func (m *mtuCache) lookup(a netip.Addr) int {
	if !a.IsValid() || a.IsUnspecified() {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byAddr == nil || time.Since(m.at) > 30*time.Second {
		m.byAddr = make(map[netip.Addr]int)
		m.at = time.Now()
		ifs, _ := net.Interfaces()
		for _, ifc := range ifs {
			addrs, _ := ifc.Addrs()
			for _, ad := range addrs {
				if ipn, ok := ad.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
						m.byAddr[ip.Unmap()] = ifc.MTU
					}
				}
			}
		}
	}
	if mtu, ok := m.byAddr[a.Unmap().WithZone("")]; ok {
		return mtu
	}
	if a.IsLoopback() {
		return m.byAddr[netip.AddrFrom4([4]byte{127, 0, 0, 1})]
	}
	return 0
}
