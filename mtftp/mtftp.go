// Package mtftp serves one file to many clients at once over IP multicast,
// in three dialects: the RFC 2090 `multicast` option (handed over by the
// unicast tftp server), Intel's PXE MTFTP on its own port, and mtftpd's
// native dialect (docs/native-multicast.md: a paced carousel of
// Reed-Solomon coded stripes, repairs from the receivers' NAKs, late join,
// slower tiers and partial downloads), which the imaging deploys use. It
// also holds a receiver for each dialect (RFC2090Receiver, PXEReceiver,
// NativeReceiver), used by `mtftpd get --multicast`, `bench mcast` and
// `image deploy`.
//
// It reuses the tftp package's codec and option negotiation and never
// sends multicast outside the configured 239.255.0.0/16 range. Every loop
// is bounded in retries and time; a session costs a goroutine and a timer,
// never a spinning core.
package mtftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtftpd/mtftpd/internal/rto"

	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"

	"github.com/mtftpd/mtftpd/internal/counters"
	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/tftp"
)

// Defaults for the zero values of Server fields.
const (
	DefaultPort          = 1758 // IANA "tftp-mcast", RFC 2090
	DefaultTTL           = 1
	DefaultMaxBlockSize  = 1468 // Ethernet MTU 1500 − 32 (IPv4 + UDP + TFTP headers)
	DefaultInitialRTO    = time.Second
	DefaultMinRTO        = 50 * time.Millisecond
	DefaultMaxRTO        = 4 * time.Second
	DefaultRetries       = 5 // atftp's MTFTP server gives up after 5 timeouts (docs/protocols.md §7.4)
	DefaultPromoteTries  = 3 // OACK mc=1 sent this often, one RTO apart, before the promotee is skipped
	DefaultLifetime      = time.Hour
	DefaultPXEClientPort = 3001 // iPXE's fixed MTFTP client port (docs/protocols.md §7.5)

	// PXEBlockSize is PXE MTFTP's only block size (docs/protocols.md §7.2).
	PXEBlockSize = 512
	// PXEMaxSize: block numbers never wrap in PXE MTFTP, so a file has at
	// most 65535 blocks of 512 bytes (docs/protocols.md §4), the last one
	// short: a file of exactly 65535 × 512 = 33,553,920 bytes would need
	// an empty block 65536 to end it (RFC 1350 §6).
	PXEMaxSize = 65535*PXEBlockSize - 1
	// MaxBlocks: no rollover in multicast (docs/protocols.md §4).
	MaxBlocks = 65535
)

var (
	// DefaultGroupRange is the RFC 2090 group pool (atftp's default too).
	DefaultGroupRange = netip.MustParsePrefix("239.255.0.0/24")
	// DefaultPXEGroup is iPXE's fixed MTFTP group (docs/protocols.md §7.5).
	DefaultPXEGroup = netip.MustParseAddr("239.255.1.1")
	// allowedScope is the only multicast range mtftpd ever sends to
	// (RFC 2365 organisation-local scope; docs/design.md, "Lab rules").
	allowedScope = netip.MustParsePrefix("239.255.0.0/16")
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("mtftp: server closed")

// Server runs the multicast dialects. Configure it through its fields
// before Serve; a zero field means the documented default. ServeMulticast
// (the RFC 2090 hook of tftp.Server) may be called from many goroutines.
//
// PXE MTFTP: the spec gives every boot file its own group and client port
// (DHCP option 43.1/43.2): a file the DHCP server announces (PXEFileGroup)
// gets one from PXEFileGroups, and passes of different files run at once.
// iPXE ignores option 43 and always listens on 239.255.1.1:3001, so every
// other file is served on PXEGroup:PXEClientPort, one pass at a time.
type Server struct {
	// Files serves the files. Required.
	Files *filestore.Store
	// GroupRange is the RFC 2090 group pool; it must lie inside
	// 239.255.0.0/16. Zero = DefaultGroupRange.
	GroupRange netip.Prefix
	// Port is the UDP port RFC 2090 DATA is sent to; 0 = DefaultPort.
	Port int
	// Interface names the interface multicast leaves by (IP_MULTICAST_IF);
	// "" = the interface of the address the request came to, else the route.
	Interface string
	// TTL of multicast datagrams; 0 = DefaultTTL (the local link).
	TTL int
	// MaxBlockSize caps the RFC 2090 blksize; 0 = DefaultMaxBlockSize.
	MaxBlockSize int

	// PXEListen is the PXE MTFTP server address ("0.0.0.0:1759"); "" = off.
	PXEListen string
	// PXEGroup and PXEClientPort are where PXE MTFTP DATA goes; zero =
	// 239.255.1.1 and 3001.
	PXEGroup      netip.Addr
	PXEClientPort int

	InitialRTO, MinRTO, MaxRTO time.Duration // 0 = the Default* values
	Retries                    int           // consecutive timeouts before a master (or PXE pass) is dropped; 0 = DefaultRetries
	PromoteTries               int           // mc=1 OACKs to a promotee before it is skipped; 0 = DefaultPromoteTries
	SessionLifetime            time.Duration // hard cap on one session or pass; 0 = DefaultLifetime

	// NativeRate caps the native dialect's stream in bytes/s; 0 = discover
	// it from the receivers' loss.
	NativeRate int64
	// NativeStart is when a new native session starts streaming (the
	// policy udp-sender users know): zero fields take the defaults
	// (DefaultNativeSettle, DefaultNativeMaxWait). NativeStartRules
	// override it per file (the first rule whose pattern matches), and a
	// receiver's request may ask for its own (capped by NativeMaxWaitCap).
	NativeStart      StartPolicy
	NativeStartRules []StartRule
	// NativeMaxWaitCap bounds the MaxWait a receiver may ask for; 0 =
	// DefaultNativeMaxWaitCap.
	NativeMaxWaitCap time.Duration
	// PXE MTFTP per-file groups (pxemap.go). A boot file announced by
	// the DHCP server gets group PXEFileGroups.Addr()+i and client port
	// PXEFilePort+i for a slot i of its own.
	PXEFileGroups netip.Prefix // inside 239.255.0.0/16, apart from GroupRange; zero = DefaultPXEFileGroups
	PXEFilePort   int          // client port of slot 0; 0 = DefaultPXEFilePort
	pxeFiles      pxeFileMap
	pxeAddr       netip.AddrPort // PXEListen, resolved

	// RequestLimiter limits PXE MTFTP requests per client address;
	// requests over it get no answer. nil = a limiter of the listener's
	// own at DefaultPXERequestRate; tftp.NewSourceLimiter(0, 0) = none.
	RequestLimiter *tftp.SourceLimiter

	// Log receives lifecycle events and one line per finished session.
	Log zerolog.Logger
	// Counters count every packet's fate; read them at any time.
	Counters Counters

	// dial opens a session socket on local (RFC 2090 server TID), and
	// dialNative a native one; tests replace them with an in-memory network.
	dial       func(local netip.Addr) (conn, error)
	dialNative func(local netip.Addr) (nativeConn, error)
	// sendChallenge sends a native CHALLENGE (tests replace it).
	sendChallenge func(b []byte, to netip.AddrPort)

	cookies    cookieJar
	chMu       sync.Mutex
	chConns    map[netip.Addr]*net.UDPConn // challenge sockets by local address
	parityUsed atomic.Int64                // bytes of parity cached by all native sessions

	mu       sync.Mutex
	sessions map[sessionKey]*session
	natives  map[nativeKey]*nativeSession
	shaMu    sync.Mutex
	shas     map[nativeKey][32]byte    // file digests for native receivers
	views    map[*sessionView]struct{} // running sessions of every dialect (Sessions)
	groups   map[netip.Addr]bool
	closing  bool
	wg       sync.WaitGroup
	pxeConn  conn
	stopPXE  context.CancelFunc
}

// Counters of the multicast dialects; all fields are atomic.
type Counters struct {
	Sessions     atomic.Uint64 // RFC 2090 sessions started
	Receivers    atomic.Uint64 // RFC 2090 clients that joined a session
	Fallbacks    atomic.Uint64 // multicast requests handed back for unicast
	Completed    atomic.Uint64 // RFC 2090 clients that ACKed the last block
	Aborted      atomic.Uint64 // clients that sent an ERROR
	Dropped      atomic.Uint64 // masters or promotees dropped after timeouts
	Promotions   atomic.Uint64 // OACK mc=1 to a client other than the first
	Resilenced   atomic.Uint64 // OACK mc=0 to a passive client that ACKed
	Passes       atomic.Uint64 // PXE MTFTP passes started
	PXEIgnored   atomic.Uint64 // PXE RRQs during a pass (not answered, spec)
	PXEHandovers atomic.Uint64 // PXE passes handed to a new requester: the last one never ACKed DATA 1
	PXERefused   atomic.Uint64 // PXE RRQs refused with an ERROR
	DataSent     atomic.Uint64 // DATA datagrams sent (multicast and unicast)
	BytesSent    atomic.Uint64 // UDP payload bytes of those datagrams
	Repairs      atomic.Uint64 // DATA blocks sent more than once in a session/pass
	Timeouts     atomic.Uint64 // retransmission timer expiries
	BadPacket    atomic.Uint64 // unparsable or unexpected packets
	UnknownPeer  atomic.Uint64 // packets from a non-member to a session socket
	SendErrors   atomic.Uint64 // failed sends
	RateLimited  atomic.Uint64 // PXE MTFTP requests dropped unanswered: over the per-client rate
	// The native dialect (NativeMoves: receivers moved to a slower tier;
	// NativeNaks: stripes asked for in status packets).
	NativeSessions  atomic.Uint64
	NativeReceivers atomic.Uint64
	NativeCompleted atomic.Uint64
	NativeMoves     atomic.Uint64
	NativeNaks      atomic.Uint64
	// NativeChallenges: joins answered with a cookie to echo (not yet
	// proven); NativeBadToken: receiver packets with a wrong token.
	NativeChallenges atomic.Uint64
	NativeBadToken   atomic.Uint64

	Active       atomic.Int64 // RFC 2090 and native sessions running
	ActivePasses atomic.Int64 // PXE passes running (at most one per group)
}

// Snapshot returns every counter with its field name.
func (c *Counters) Snapshot() []counters.Value { return counters.Snapshot(c) }

// conn is the narrow edge to the network: a UDP socket in production, an
// in-memory network with multicast groups in the virtual-time tests.
type conn interface {
	// ReadFrom reads one datagram; a net.Error with Timeout() after the
	// read deadline.
	ReadFrom(b []byte) (int, netip.AddrPort, error)
	SetReadDeadline(t time.Time) error
	WriteTo(b []byte, dst netip.AddrPort) error
	Close() error
}

type timing struct {
	initial, min, max time.Duration
	retries, promote  int
	lifetime          time.Duration
}

func (s *Server) timing() timing {
	return timing{
		initial:  positiveOr(s.InitialRTO, DefaultInitialRTO),
		min:      positiveOr(s.MinRTO, DefaultMinRTO),
		max:      positiveOr(s.MaxRTO, DefaultMaxRTO),
		retries:  positiveOr(s.Retries, DefaultRetries),
		promote:  positiveOr(s.PromoteTries, DefaultPromoteTries),
		lifetime: positiveOr(s.SessionLifetime, DefaultLifetime),
	}
}

// positiveOr is v, or def when v is zero or negative: a zero field means
// the documented default (docs/design.md, "Architecture").
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// validate fills in defaults and returns every problem with its field.
func (s *Server) validate() error {
	var errs []error
	if s.Files == nil {
		errs = append(errs, errors.New("mtftp: Files is nil"))
	}
	if !s.GroupRange.IsValid() {
		s.GroupRange = DefaultGroupRange
	}
	if g := s.GroupRange.Masked(); g != s.GroupRange {
		s.GroupRange = g // only the first time: Init runs on every request, readers hold no lock
	}
	if !s.GroupRange.Addr().Is4() || s.GroupRange.Bits() < allowedScope.Bits() || !allowedScope.Contains(s.GroupRange.Addr()) {
		errs = append(errs, fmt.Errorf("mtftp: GroupRange %s is not inside %s", s.GroupRange, allowedScope))
	}
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, fmt.Errorf("mtftp: Port %d is outside 1..65535", s.Port))
	}
	if s.TTL == 0 {
		s.TTL = DefaultTTL
	}
	if s.TTL < 1 || s.TTL > 255 {
		errs = append(errs, fmt.Errorf("mtftp: TTL %d is outside 1..255", s.TTL))
	}
	if s.MaxBlockSize == 0 {
		s.MaxBlockSize = DefaultMaxBlockSize
	}
	if s.MaxBlockSize < tftp.MinBlockSize || s.MaxBlockSize > tftp.MaxBlockSize {
		errs = append(errs, fmt.Errorf("mtftp: MaxBlockSize %d is outside 8..65464", s.MaxBlockSize))
	}
	if !s.PXEGroup.IsValid() {
		s.PXEGroup = DefaultPXEGroup
	}
	if !allowedScope.Contains(s.PXEGroup) {
		errs = append(errs, fmt.Errorf("mtftp: PXEGroup %s is not inside %s", s.PXEGroup, allowedScope))
	}
	if s.PXEClientPort == 0 {
		s.PXEClientPort = DefaultPXEClientPort
	}
	if s.PXEClientPort < 1 || s.PXEClientPort > 65535 {
		errs = append(errs, fmt.Errorf("mtftp: PXEClientPort %d is outside 1..65535", s.PXEClientPort))
	}
	if s.NativeRate < 0 {
		errs = append(errs, fmt.Errorf("mtftp: NativeRate %d is negative", s.NativeRate))
	}
	if err := s.validatePXE(); err != nil {
		errs = append(errs, err)
	}
	if s.Interface != "" {
		if _, err := net.InterfaceByName(s.Interface); err != nil {
			errs = append(errs, fmt.Errorf("mtftp: Interface %q: %w", s.Interface, err))
		}
	}
	return errors.Join(errs...)
}

// Init validates the configuration and prepares the server for
// ServeMulticast; Serve calls it too. It is safe to call more than once.
func (s *Server) Init() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.validate(); err != nil {
		return err
	}
	if s.sessions == nil {
		s.sessions = make(map[sessionKey]*session)
		s.natives = make(map[nativeKey]*nativeSession)
		s.groups = make(map[netip.Addr]bool)
	}
	if s.dial == nil {
		s.dial = s.dialMulticast
	}
	if s.dialNative == nil {
		s.dialNative = s.dialNativeUDP
	}
	return nil
}

// Serve runs the PXE MTFTP listener (if PXEListen is set) until ctx is
// cancelled or Shutdown is called; RFC 2090 sessions run from
// ServeMulticast whether or not Serve runs. It returns nil after ctx is
// cancelled and ErrServerClosed after Shutdown.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Init(); err != nil {
		return err
	}
	if s.PXEListen == "" {
		s.Log.Info().Str("groups", s.GroupRange.String()).Int("port", s.Port).Msg("mtftp: RFC 2090 multicast ready, PXE MTFTP off")
		<-ctx.Done()
		return nil
	}
	ua, err := net.ResolveUDPAddr("udp4", s.PXEListen)
	if err != nil {
		return fmt.Errorf("mtftp: PXEListen: %w", err)
	}
	uc, err := net.ListenUDP("udp4", ua)
	if err != nil {
		return fmt.Errorf("mtftp: PXEListen: %w", err)
	}
	if err := s.setMulticastOpts(uc, ua.AddrPort().Addr().Unmap()); err != nil {
		uc.Close()
		return err
	}
	c := udpConn{uc}
	pctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		cancel()
		uc.Close()
		return ErrServerClosed
	}
	s.pxeConn, s.stopPXE = c, cancel
	s.mu.Unlock()
	s.Log.Info().Str("addr", uc.LocalAddr().String()).Str("group", s.PXEGroup.String()).Int("client_port", s.PXEClientPort).
		Str("file_groups", s.PXEFileGroups.String()).Int("file_port", s.PXEFilePort).
		Str("groups", s.GroupRange.String()).Int("port", s.Port).Msg("mtftp: PXE MTFTP listening")
	err = newPXEServer(s, c).run(pctx)
	cancel()
	c.Close()
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrServerClosed
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Shutdown stops the PXE listener after its running pass and refuses new
// RFC 2090 sessions; running sessions finish until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	stop := s.stopPXE
	s.mu.Unlock()
	s.closeChallenges()
	if stop != nil {
		stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// udpConn adapts *net.UDPConn to conn.
type udpConn struct{ *net.UDPConn }

func (c udpConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, a, err := c.UDPConn.ReadFromUDPAddrPort(b)
	return n, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), err
}

func (c udpConn) WriteTo(b []byte, dst netip.AddrPort) error {
	_, err := c.UDPConn.WriteToUDPAddrPort(b, dst)
	return err
}

// dialMulticast opens an RFC 2090 session socket (the server TID).
func (s *Server) dialMulticast(local netip.Addr) (conn, error) {
	uc, err := s.sessionSocket(local)
	if err != nil {
		return nil, err
	}
	return udpConn{uc}, nil
}

// sessionSocket opens a session's socket: an ephemeral port on local, set
// up to send multicast (of every dialect).
func (s *Server) sessionSocket(local netip.Addr) (*net.UDPConn, error) {
	var ip net.IP
	if local.IsValid() && !local.IsUnspecified() {
		ip = local.AsSlice()
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		return nil, err
	}
	if err := s.setMulticastOpts(uc, local); err != nil {
		uc.Close()
		return nil, err
	}
	return uc, nil
}

// setMulticastOpts sets TTL and the egress interface: the configured one,
// else the one holding local (the address the request came to). Never the
// routing table's choice: a request that came in on one interface must
// not make a stream leave by another (the default route's, say), so with
// no interface found the session is refused and the client gets unicast.
func (s *Server) setMulticastOpts(uc *net.UDPConn, local netip.Addr) error {
	pc := ipv4.NewPacketConn(uc)
	if err := pc.SetMulticastTTL(s.TTL); err != nil {
		return fmt.Errorf("mtftp: IP_MULTICAST_TTL %d: %w", s.TTL, err)
	}
	var ifi *net.Interface
	if s.Interface != "" {
		i, err := net.InterfaceByName(s.Interface)
		if err != nil {
			return fmt.Errorf("mtftp: interface %q: %w", s.Interface, err)
		}
		ifi = i
	} else if local.IsValid() && !local.IsUnspecified() {
		ifi = interfaceOf(local)
	}
	if ifi == nil {
		return fmt.Errorf("mtftp: no interface holds %v: not choosing one for the multicast stream", local)
	}
	if err := pc.SetMulticastInterface(ifi); err != nil {
		return fmt.Errorf("mtftp: IP_MULTICAST_IF %s: %w", ifi.Name, err)
	}
	return nil
}

func interfaceOf(a netip.Addr) *net.Interface {
	ifs, _ := net.Interfaces()
	for i := range ifs {
		addrs, _ := ifs[i].Addrs()
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok {
				// Exact address, or inside the interface's prefix when it
				// is loopback (all of 127/8 is lo's).
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && (ip.Unmap() == a || (ip.IsLoopback() && ipn.Contains(a.AsSlice()))) {
					return &ifs[i]
				}
			}
		}
	}
	return nil
}

// newRTO is a session's retransmission timer (the shared estimator).
func newRTO(t timing) rto.Estimator { return rto.New(t.initial, t.min, t.max) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readEach calls fn with each datagram c receives until c is closed (a
// read timeout does not end it). b is a buffer of size bytes that the
// next read reuses: fn copies what it keeps.
func readEach(c conn, size int, fn func(b []byte, from netip.AddrPort)) {
	buf := make([]byte, size)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if isTimeout(err) {
				continue
			}
			return
		}
		fn(buf[:n], from)
	}
}
