package mtftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/mtftpd/mtftpd/tftp"
)

// What the RFC 2090 and PXE MTFTP receivers (rfc2090_client.go,
// pxe_client.go) share: a unicast socket toward the server, a socket
// joined to the group, one channel both feed, and the block bitmap of the
// output file.

// ErrMulticastRefused: the server answered an RFC 2090 request without
// multicast (a plain OACK or DATA: it serves that request by unicast).
var ErrMulticastRefused = errors.New("mtftp: server answered without multicast")

// ReceiveResult describes a finished RFC 2090 or PXE MTFTP download.
type ReceiveResult struct {
	Size int64
	// Duration runs from the first request to the last block held (not
	// the lingering after it).
	Duration   time.Duration
	Blocks     int64 // DATA blocks taken
	Duplicates int64 // DATA blocks received again
	Bytes      int64 // payload bytes of every DATA received, repeats included
	Acks       int64 // ACKs sent
	// Requests: RFC 2090, ACKs sent as master for a block it had seen go
	// by without it (asking for a gap); PXE, RRQs sent (opens).
	Requests int64
	// Masters: RFC 2090, times made master (OACK mc=1); PXE, passes this
	// receiver acknowledged (it got the unicast DATA 1).
	Masters  int
	Timeouts int // the receiver's own timer expiries
}

// mcastGet is one RFC 2090 or PXE MTFTP download under way, the part
// both receivers share: its sockets, the output's block bitmap, the
// result so far and the receiver's progress counters.
type mcastGet struct {
	s     *sockets
	f     *blockFile
	res   ReceiveResult
	start time.Time
	srv   netip.AddrPort
	local netip.Addr // the group is joined from here
	join  joinFunc
	size  *atomic.Int64 // the receiver's Size
}

// newGet starts a download into out in blocks of blksize, resetting the
// receiver's progress counters held and size.
func newGet(out *os.File, blksize int, held, size *atomic.Int64) *mcastGet {
	size.Store(-1)
	held.Store(0)
	g := &mcastGet{start: time.Now(), size: size}
	g.f = &blockFile{out: out, blksize: blksize, res: &g.res, prog: held}
	return g
}

// connect resolves server (HOST[:PORT], port def when none is given) and
// opens the unicast socket toward it (openSockets); the caller closes g.s.
func (g *mcastGet) connect(dial dialFunc, join joinFunc, iface string, local netip.Addr, server, def string) error {
	srv, err := resolvePort(server, def)
	if err != nil {
		return err
	}
	g.srv = srv
	g.s, g.local, g.join, err = openSockets(dial, join, iface, local, srv)
	return err
}

// data keeps the DATA block in b; ok is false when b does not parse. Once
// the short block is in, the receiver's Size is the file's.
func (g *mcastGet) data(b []byte) (n uint16, ok bool, err error) {
	n, payload, err := tftp.ParseData(b)
	if err != nil {
		return 0, false, nil
	}
	if _, err := g.f.put(n, payload); err != nil {
		return n, true, err
	}
	if g.f.last != 0 {
		g.size.Store(g.f.size)
	}
	return n, true, nil
}

// stopClock ends the download's Duration: the last block is held.
func (g *mcastGet) stopClock() { g.res.Duration = time.Since(g.start) }

// finish ends a complete download: the file cut to its size, the result.
func (g *mcastGet) finish() (ReceiveResult, error) {
	err := g.f.finish()
	return g.res, err
}

// remoteError is the server's ERROR packet b as an error.
func remoteError(b []byte) error {
	code, msg, _ := tftp.ParseError(b)
	return &tftp.RemoteError{Code: code, Message: msg}
}

// rxPkt is one datagram from either socket.
type rxPkt struct {
	from  netip.AddrPort
	b     []byte
	group bool
}

// sockets are a receiver's unicast and group sockets and their readers.
type sockets struct {
	uc, gc conn
	in     chan rxPkt
	wg     sync.WaitGroup
}

// dialFunc opens the unicast socket toward server and says which local
// address it uses; joinFunc opens a socket for group's datagrams. Tests
// replace both with an in-memory network.
type (
	dialFunc func(server netip.AddrPort) (c conn, local netip.Addr, err error)
	joinFunc func(group netip.AddrPort, local netip.Addr) (conn, error)
)

// openSockets opens a receiver's unicast socket toward srv through dial
// (nil: the network, on local if valid) and returns its sockets, the local address the
// group is joined from and the joinFunc to use (join, or the network's on
// iface).
func openSockets(dial dialFunc, join joinFunc, iface string, local netip.Addr, srv netip.AddrPort) (*sockets, netip.Addr, joinFunc, error) {
	if dial == nil {
		dial = udpDialer(local)
	}
	if join == nil {
		join = groupJoiner(iface)
	}
	uc, local, err := dial(srv)
	if err != nil {
		return nil, netip.Addr{}, nil, err
	}
	s := &sockets{uc: uc, in: make(chan rxPkt, 1024)}
	s.read(uc, false)
	return s, local, join, nil
}

// read forwards c's datagrams to in until c is closed.
func (s *sockets) read(c conn, group bool) {
	s.wg.Go(func() {
		readEach(c, 65536, func(b []byte, from netip.AddrPort) {
			s.in <- rxPkt{from, append([]byte(nil), b...), group}
		})
	})
}

// joinGroup opens the group socket (once).
func (s *sockets) joinGroup(join joinFunc, group netip.AddrPort, local netip.Addr) error {
	if s.gc != nil {
		return nil
	}
	gc, err := join(group, local)
	if err != nil {
		return err
	}
	s.gc = gc
	s.read(gc, true)
	return nil
}

// close closes both sockets and waits for the readers, draining what
// they still hold.
func (s *sockets) close() {
	s.uc.Close()
	if s.gc != nil {
		s.gc.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	for {
		select {
		case <-s.in:
		case <-done:
			return
		}
	}
}

// next waits until d for a datagram; ok is false on timeout.
func (s *sockets) next(ctx context.Context, d time.Duration) (p rxPkt, ok bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case p = <-s.in:
		return p, true, nil
	case <-t.C:
		return rxPkt{}, false, nil
	case <-ctx.Done():
		return rxPkt{}, false, ctx.Err()
	}
}

// udpDialer returns the production dialFunc: a UDP socket on local, or
// if local is not valid on the address that routes to the server.
func udpDialer(local netip.Addr) dialFunc {
	return func(server netip.AddrPort) (conn, netip.Addr, error) {
		if !local.IsValid() {
			probe, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
			if err != nil {
				return nil, netip.Addr{}, err
			}
			local = probe.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
			probe.Close()
		}
		uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
		if err != nil {
			return nil, netip.Addr{}, err
		}
		return udpConn{uc}, local, nil
	}
}

// groupJoiner returns the production joinFunc: bind group's port on the
// group address (only that group's datagrams; SO_REUSEADDR lets many
// receivers of one host share it) and join it on iface, or on the
// interface holding local.
func groupJoiner(iface string) joinFunc {
	return func(group netip.AddrPort, local netip.Addr) (conn, error) {
		if !allowedScope.Contains(group.Addr()) {
			return nil, fmt.Errorf("mtftp: group %v is outside %v", group.Addr(), allowedScope)
		}
		var ifi *net.Interface
		if iface != "" {
			i, err := net.InterfaceByName(iface)
			if err != nil {
				return nil, err
			}
			ifi = i
		} else if ifi = interfaceOf(local); ifi == nil {
			return nil, fmt.Errorf("mtftp: no interface holds %v to join the group on (name one)", local)
		}
		uc, err := joinGroupSocket(group, ifi)
		if err != nil {
			return nil, err
		}
		return udpConn{uc}, nil
	}
}

// resolvePort resolves HOST[:PORT] with port def when none is given.
func resolvePort(server string, def string) (netip.AddrPort, error) {
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, def)
	}
	return resolveServerAddr(server)
}

// blockFile is the output of a lock-step download: blocks written at
// their offsets as they arrive, a bitmap of those held, and the last
// (short) block once known. Block numbers never wrap (MaxBlocks). Blocks
// come in any order (a pass joined midway, repairs), so tftp's in-order
// unicast receive state does not fit here (docs/design.md, "Architecture").
type blockFile struct {
	out     *os.File
	blksize int
	have    []bool // index = block number
	held    int
	last    int // block number of the short block; 0 = not seen yet
	size    int64
	maxSeen int
	res     *ReceiveResult
	prog    *atomic.Int64
}

// put keeps block n; it reports whether the block was new.
func (f *blockFile) put(n uint16, payload []byte) (bool, error) {
	f.res.Bytes += int64(len(payload))
	b := int(n)
	if b == 0 || len(payload) > f.blksize || (f.last != 0 && b > f.last) {
		return false, nil // not a block of this file
	}
	f.maxSeen = max(f.maxSeen, b)
	if b >= len(f.have) {
		f.have = append(f.have, make([]bool, b+1-len(f.have))...)
	}
	if f.have[b] {
		f.res.Duplicates++
		return false, nil
	}
	if len(payload) < f.blksize {
		if f.last != 0 && f.last != b {
			return false, fmt.Errorf("mtftp: two short blocks, %d and %d", f.last, b)
		}
		f.last = b
		f.size = int64(b-1)*int64(f.blksize) + int64(len(payload))
		if f.maxSeen > b {
			return false, fmt.Errorf("mtftp: block %d after the short block %d", f.maxSeen, b)
		}
	}
	if _, err := f.out.WriteAt(payload, int64(b-1)*int64(f.blksize)); err != nil {
		return false, err
	}
	f.have[b] = true
	f.held++
	f.res.Blocks++
	f.prog.Add(int64(len(payload)))
	return true, nil
}

// first is the first block not held (1-based).
func (f *blockFile) first() int {
	for i := 1; i < len(f.have); i++ {
		if !f.have[i] {
			return i
		}
	}
	return max(len(f.have), 1)
}

func (f *blockFile) complete() bool { return f.last != 0 && f.held == f.last }

// missing counts the blocks not held up to the highest seen (plus one
// when the end is not known yet).
func (f *blockFile) missing() int {
	n := f.maxSeen - f.held
	if f.last == 0 {
		n++
	}
	return n
}

// finish cuts the file to its size.
func (f *blockFile) finish() error {
	f.res.Size = f.size
	return f.out.Truncate(f.size)
}

// sendAck sends ACK n to dst.
func sendAck(c conn, n int, dst netip.AddrPort, res *ReceiveResult) {
	res.Acks++
	c.WriteTo(tftp.AppendAck(nil, uint16(n)), dst)
}

// joinGroupSocket binds the group's port on the group address (so only
// that group's datagrams arrive; SO_REUSEADDR lets many receivers on one
// host share it) and joins the group on ifi.
func joinGroupSocket(group netip.AddrPort, ifi *net.Interface) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: reuseAddrControl}
	pc, err := lc.ListenPacket(context.Background(), "udp4", group.String())
	if err != nil {
		return nil, err
	}
	uc := pc.(*net.UDPConn)
	if err := ipv4.NewPacketConn(uc).JoinGroup(ifi, &net.UDPAddr{IP: group.Addr().AsSlice()}); err != nil {
		uc.Close()
		return nil, fmt.Errorf("mtftp: join %v on %s: %w", group.Addr(), ifi.Name, err)
	}
	return uc, nil
}
