package udpio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// connSys is the Linux part of a Conn.
type connSys struct {
	rc      syscall.RawConn
	inet6   bool // socket family AF_INET6 (v4 peers are v4-mapped)
	pktinfo bool
	rxqOvfl bool // SO_RXQ_OVFL on: reads carry the drop count
	gro     bool
	woobMu  sync.Mutex  // woob: WriteTo may run on several goroutines
	woob    [64]byte    // WriteTo's IP_PKTINFO cmsg
	roob    [128]byte   // ReadFrom's control data
	r       *mmsgReader // ReadBatch state, made at the first call
}

// setup tunes the socket (see New) and picks the writer for the caps.
func (c *Conn) setup(o Options) error {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("udpio: %w", err)
	}
	c.sys.rc = rc
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		s := int(fd)
		domain, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			serr = fmt.Errorf("udpio: getsockopt SO_DOMAIN: %w", err)
			return
		}
		c.sys.inet6 = domain == unix.AF_INET6
		var short []error
		c.sndGot, err = setBuf(s, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.SndBuf)
		if err != nil {
			serr = fmt.Errorf("udpio: sndbuf %s: %w", sizeString(o.SndBuf), err)
			return
		}
		if c.sndGot < o.SndBuf {
			short = append(short, fmt.Errorf("sndbuf: wanted %s, got %s", sizeString(o.SndBuf), sizeString(c.sndGot)))
		}
		c.rcvGot, err = setBuf(s, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.RcvBuf)
		if err != nil {
			serr = fmt.Errorf("udpio: rcvbuf %s: %w", sizeString(o.RcvBuf), err)
			return
		}
		if c.rcvGot < o.RcvBuf {
			short = append(short, fmt.Errorf("rcvbuf: wanted %s, got %s", sizeString(o.RcvBuf), sizeString(c.rcvGot)))
		}
		if len(short) > 0 {
			c.bufErr = fmt.Errorf("udpio: %w (raise net.core.wmem_max/rmem_max or run as root for SO_*BUFFORCE)", errors.Join(short...))
		}
		// DF off (docs/protocols.md §1.1). On an AF_INET6 socket the IPv4 option
		// covers v4-mapped peers of a dual-stack socket and may fail on a
		// v6-only one, which is fine.
		err = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
		if c.sys.inet6 {
			err = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
		}
		if err != nil {
			serr = fmt.Errorf("udpio: setsockopt IP_MTU_DISCOVER=IP_PMTUDISC_DONT: %w", err)
			return
		}
		if o.Pktinfo {
			// A dual-stack socket reports v4 datagrams with the IPv4
			// option only (udpv6_recvmsg), so set both; the IPv4 one may
			// fail on a v6-only socket.
			err = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			if c.sys.inet6 {
				err = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			}
			if err != nil {
				serr = fmt.Errorf("udpio: setsockopt IP_PKTINFO: %w", err)
				return
			}
			c.sys.pktinfo = true
		}
		if o.RxqOverflow {
			if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1); err != nil {
				serr = fmt.Errorf("udpio: setsockopt SO_RXQ_OVFL: %w", err)
				return
			}
			c.sys.rxqOvfl = true
		}
	})
	if cerr != nil {
		return fmt.Errorf("udpio: %w", cerr)
	}
	if serr != nil {
		return serr
	}
	c.w = newMMsgWriter(rc, c.sys.inet6, !c.caps.MMsg)
	return nil
}

// setBuf sets a socket buffer to want bytes, trying the FORCE option (root
// or CAP_NET_ADMIN; not capped by net.core.[rw]mem_max) first, and returns
// the size the kernel reports. want <= 0 keeps the default.
func setBuf(s, force, plain, want int) (int, error) {
	if want > 0 {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, force, want); err != nil {
			if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, plain, want); err != nil {
				return 0, err
			}
		}
	}
	return unix.GetsockoptInt(s, unix.SOL_SOCKET, plain)
}

// isGSOError reports whether a send error means this path cannot do UDP
// GSO: EIO when the device lacks checksum offload (quic-go#3911,
// wireguard-go errShouldDisableUDPGSO), EINVAL for a segment layout the
// kernel refuses.
func isGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}

// gsoControl writes a UDP_SEGMENT cmsg (SOL_UDP, uint16 segment size;
// udp(7)) into b and returns it.
func gsoControl(b []byte, seg int) []byte {
	n := unix.CmsgSpace(2)
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(seg))
	return b
}

// mmsghdr is struct mmsghdr (sendmmsg(2)); Go pads it to the C layout.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// mmsgWriter issues sendmmsg (or, single, one sendmsg per call) on
// preallocated headers. It stands in for x/net's ipv4.PacketConn.WriteBatch,
// which has the same shape (and is what the benchmark compares against) but
// takes its mmsghdr/iovec/sockaddr arrays from a sync.Pool
// (x/net/internal/socket mmsgTmpsPool). Measured here (go1.26.8, x/net
// v0.62.0, AllocsPerRun over 1000 64-datagram windows): 0 allocations per
// window normally, 1 per window under -race, because the race detector makes
// sync.Pool drop a quarter of Puts on purpose and each drop rebuilds the
// arrays. Owning the arrays makes the zero-allocation rule hold everywhere,
// saves the pool round trip, and lets probing and the no-mmsg path
// (sendmsg, which x/net only offers through an allocating closure) share
// one code path.
type mmsgWriter struct {
	rc     syscall.RawConn
	inet6  bool
	single bool

	hs  [maxBatch]mmsghdr
	iov [2 * maxBatch]unix.Iovec
	sa  [maxBatch]unix.RawSockaddrInet6

	// Per-call state for fn, which is bound once so RawConn.Write does not
	// allocate a closure per call.
	nh, flags, n int
	errno        syscall.Errno
	fn           func(fd uintptr) bool
}

func newMMsgWriter(rc syscall.RawConn, inet6, single bool) *mmsgWriter {
	w := &mmsgWriter{rc: rc, inet6: inet6, single: single}
	w.fn = w.send
	return w
}

var errAddr = errors.New("udpio: destination is not a *net.UDPAddr of the socket's family")

// WriteBatch sends as many of ms as fit the preallocated headers in one
// syscall (one message if single) and returns how many the kernel took.
func (w *mmsgWriter) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	nh, err := w.pack(ms)
	if err != nil {
		return 0, err
	}
	if nh == 0 {
		return 0, nil
	}
	w.nh, w.flags, w.n, w.errno = nh, flags, 0, 0
	for i := range ms[:nh] {
		raceReadMessage(&ms[i])
	}
	err = w.rc.Write(w.fn)
	n, errno := w.n, w.errno
	w.unpin(nh)
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		if w.single {
			return 0, os.NewSyscallError("sendmsg", errno)
		}
		return 0, os.NewSyscallError("sendmmsg", errno)
	}
	return n, nil
}

// send runs under RawConn.Write; false means "wait until writable".
func (w *mmsgWriter) send(fd uintptr) bool {
	for {
		var r uintptr
		var e syscall.Errno
		if w.single {
			_, _, e = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.hs[0].hdr)), uintptr(w.flags))
			r = 1
		} else {
			r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hs[0])), uintptr(w.nh), uintptr(w.flags), 0, 0)
		}
		switch e {
		case 0:
			w.n = int(r)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			w.errno = e
		}
		return true
	}
}

// pack fills headers for as many leading messages of ms as fit.
func (w *mmsgWriter) pack(ms []ipv4.Message) (nh int, err error) {
	limit := min(len(ms), len(w.hs))
	if w.single {
		limit = min(limit, 1)
	}
	iov := 0
	var prev net.Addr
	for nh = 0; nh < limit; nh++ {
		m := &ms[nh]
		if iov+len(m.Buffers) > len(w.iov) {
			break
		}
		h := &w.hs[nh].hdr
		*h = unix.Msghdr{}
		w.hs[nh].len = 0
		vs := w.iov[iov : iov+len(m.Buffers)]
		for i, b := range m.Buffers {
			vs[i] = unix.Iovec{}
			if len(b) > 0 {
				vs[i].Base = &b[0]
				vs[i].SetLen(len(b))
			}
		}
		if len(vs) > 0 {
			h.Iov = &vs[0]
			h.SetIovlen(len(vs))
		}
		iov += len(vs)
		if len(m.OOB) > 0 {
			h.Control = &m.OOB[0]
			h.SetControllen(len(m.OOB))
		}
		if m.Addr != nil {
			if nh > 0 && m.Addr == prev {
				h.Name, h.Namelen = w.hs[nh-1].hdr.Name, w.hs[nh-1].hdr.Namelen
			} else {
				ua, ok := m.Addr.(*net.UDPAddr)
				if !ok {
					return 0, errAddr
				}
				l := putSockaddr(&w.sa[nh], ua.IP, ua.Port, w.inet6)
				if l == 0 {
					return 0, errAddr
				}
				h.Name = (*byte)(unsafe.Pointer(&w.sa[nh]))
				h.Namelen = l
			}
			prev = m.Addr
		}
	}
	return nh, nil
}

// unpin drops the pointers into callers' buffers the headers hold, so a
// Conn does not keep them alive between calls.
func (w *mmsgWriter) unpin(nh int) {
	iov := 0
	for i := range w.hs[:nh] {
		iov += int(w.hs[i].hdr.Iovlen)
		w.hs[i].hdr = unix.Msghdr{}
	}
	clear(w.iov[:iov])
}

// putSockaddr writes ip:port as a sockaddr_in (or sockaddr_in6 for an
// AF_INET6 socket, v4 as v4-mapped) into sa and returns its length, 0 if
// ip does not fit the family.
func putSockaddr(sa *unix.RawSockaddrInet6, ip net.IP, port int, inet6 bool) uint32 {
	if !inet6 {
		ip4 := ip.To4()
		if ip4 == nil {
			return 0
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], uint16(port))
		copy(sa4.Addr[:], ip4)
		return unix.SizeofSockaddrInet4
	}
	ip16 := ip.To16()
	if ip16 == nil {
		return 0
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(port))
	copy(sa.Addr[:], ip16)
	return unix.SizeofSockaddrInet6
}

// getSockaddr reads a sockaddr_in or sockaddr_in6 written by the kernel.
func getSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// probeKernel finds what this kernel offers by sending to itself on a
// throwaway loopback socket: one message through sendmmsg, then two GSO
// segments. Loopback always has checksum offload, so a NIC that cannot do
// GSO is only found at send time (WriteDatagrams' fallback).
func probeKernel() Caps {
	caps := Caps{GSOMaxSegments: gsoMaxSegments}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		caps.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	caps.GSOEqualTailBug = gsoEqualTailBuggy(caps.KernelRelease)
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return caps
	}
	defer uc.Close()
	rc, err := uc.SyscallConn()
	if err != nil {
		return caps
	}
	w := newMMsgWriter(rc, false, false)
	self := uc.LocalAddr().(*net.UDPAddr)
	var payload [16]byte
	ms := []ipv4.Message{{Buffers: [][]byte{payload[:1]}, Addr: self}}
	if n, err := w.WriteBatch(ms, 0); err != nil || n != 1 {
		return caps
	}
	caps.MMsg = true
	var oob [oobSlot]byte
	ms[0].Buffers = [][]byte{payload[:8], payload[8:]}
	ms[0].OOB = gsoControl(oob[:], 8)
	if n, err := w.WriteBatch(ms, 0); err == nil && n == 1 {
		caps.GSO = true
	}
	return caps
}

// WriteTo sends one datagram b to dst. If src is valid it is the source
// address (an IP_PKTINFO / IPV6_PKTINFO cmsg), so a listener on a wildcard
// address replies from the address a request arrived on (ReadFrom's dst).
func (c *Conn) WriteTo(b []byte, dst netip.AddrPort, src netip.Addr) error {
	if !c.sys.inet6 {
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	} else if dst.Addr().Is4() {
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	var oob []byte
	if src.IsValid() {
		c.sys.woobMu.Lock()
		defer c.sys.woobMu.Unlock()
		oob = c.pktinfoControl(src)
	}
	_, _, err := c.uc.WriteMsgUDPAddrPort(b, oob, dst)
	c.st.syscalls.Add(1)
	c.st.singles.Add(1)
	if err != nil {
		c.st.sendErrors.Add(1)
		return err
	}
	c.st.datagrams.Add(1)
	return nil
}

// pktinfoControl builds the cmsg that sets a datagram's source address:
// in_pktinfo.ipi_spec_dst (ip(7)) for IPv4 on an AF_INET socket, in6_pktinfo
// (ipv6(7), RFC 3542 §6) otherwise.
func (c *Conn) pktinfoControl(src netip.Addr) []byte {
	b := c.sys.woob[:]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if !c.sys.inet6 {
		src = src.Unmap()
		if !src.Is4() {
			return nil // a v6 source cannot be set on an AF_INET socket
		}
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
		pi.Spec_dst = src.As4()
		return b[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)]
	}
	// On an AF_INET6 socket a v4 source is given v4-mapped, also for
	// v4-mapped destinations (net/ipv4/ip_sockglue.c ip_cmsg_send).
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	pi.Addr = src.As16()
	return b[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)]
}

// ReadFrom reads one datagram into b. With Options.Pktinfo, dst is the
// destination address of the datagram's IP header (in_pktinfo.ipi_addr:
// the address the request was sent to; for a broadcast that is the
// broadcast address); otherwise dst is invalid.
func (c *Conn) ReadFrom(b []byte) (n int, src netip.AddrPort, dst netip.Addr, err error) {
	if !c.sys.pktinfo && !c.sys.rxqOvfl {
		n, src, err = c.uc.ReadFromUDPAddrPort(b)
		return n, unmapAddrPort(src), netip.Addr{}, err
	}
	n, oobn, _, src, err := c.uc.ReadMsgUDPAddrPort(b, c.sys.roob[:])
	if err != nil {
		return n, unmapAddrPort(src), netip.Addr{}, err
	}
	walkCmsgs(c.sys.roob[:oobn], func(level, typ int32, data []byte) {
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			dst = netip.AddrFrom4(pi.Addr)
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			dst = netip.AddrFrom16(pi.Addr).Unmap()
		case level == unix.SOL_SOCKET && typ == unix.SO_RXQ_OVFL && len(data) >= 4:
			// A cumulative uint32 (sock_recv_drops): one store, no sum.
			c.drops.Store(uint64(*(*uint32)(unsafe.Pointer(&data[0]))))
		}
	})
	return n, unmapAddrPort(src), dst, nil
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// walkCmsgs calls f for each control message in b (cmsg(3)) without
// allocating, unlike unix.ParseSocketControlMessage.
func walkCmsgs(b []byte, f func(level, typ int32, data []byte)) {
	hl := unix.CmsgLen(0)
	for len(b) >= hl {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hl || l > len(b) {
			return
		}
		f(h.Level, h.Type, b[hl:l])
		next := unix.CmsgSpace(l - hl)
		if next > len(b) {
			return
		}
		b = b[next:]
	}
}

// EnableGRO turns on UDP_GRO (udp(7), v5.0): the kernel may hand ReadBatch
// several datagrams of one flow as one buffer, which ReadBatch splits again.
// It reports whether the kernel accepted it.
func (c *Conn) EnableGRO() bool {
	var serr error
	err := c.sys.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	})
	c.sys.gro = err == nil && serr == nil
	return c.sys.gro
}

// rOOBSlot is the control room per received message: UDP_GRO (an int) and
// IP_PKTINFO cmsgs.
const rOOBSlot = 64

// mmsgReader is ReadBatch's state: recvmmsg headers bound to the caller's
// buffers, and the packets of the last read not yet returned.
type mmsgReader struct {
	rc     syscall.RawConn
	single bool
	hs     [maxBatch]mmsghdr
	iov    [maxBatch]unix.Iovec
	sa     [maxBatch]unix.RawSockaddrInet6
	oob    [maxBatch][rOOBSlot]byte

	nh, n int
	errno syscall.Errno
	fn    func(fd uintptr) bool

	// Pending: messages [next, n) of the last read, from byte off of
	// message next, in bufs.
	bufs      [][]byte
	next, off int
}

func (r *mmsgReader) recv(fd uintptr) bool {
	for {
		var n uintptr
		var e syscall.Errno
		if r.single {
			n, _, e = unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.hs[0].hdr)), 0)
			r.hs[0].len = uint32(n)
			n = 1
		} else {
			n, _, e = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(r.nh), 0, 0, 0)
		}
		switch e {
		case 0:
			r.n = int(n)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.errno = e
		}
		return true
	}
}

// ReadBatch reads datagrams into bufs (one datagram, or one GRO-coalesced
// run of datagrams, per buffer; with GRO make each buffer 64 KiB) with one
// recvmmsg, and returns them as n packets in out[:n], whose Data alias
// bufs. It blocks until at least one datagram arrives or the read deadline
// passes.
//
// If out fills before every datagram read has been returned, the rest are
// returned by the next calls, without a syscall, from the buffers of the
// call that read them: leave those buffers untouched until a call returns
// packets from the new bufs (the usual loop, which handles the packets
// before calling again with the same bufs, does). A datagram longer than
// its buffer is truncated (MSG_TRUNC). It does not allocate in steady state.
func (c *Conn) ReadBatch(bufs [][]byte, out []Packet) (n int, err error) {
	if len(out) == 0 || len(bufs) == 0 {
		return 0, nil
	}
	r := c.sys.r
	if r == nil {
		r = &mmsgReader{rc: c.sys.rc, single: !c.caps.MMsg}
		r.fn = r.recv
		c.sys.r = r
	}
	if r.next < r.n {
		return r.split(out), nil
	}
	nh := min(len(bufs), len(out), len(r.hs))
	if r.single {
		nh = 1
	}
	for i := range nh {
		h := &r.hs[i].hdr
		*h = unix.Msghdr{}
		r.hs[i].len = 0
		r.iov[i] = unix.Iovec{}
		if len(bufs[i]) > 0 {
			r.iov[i].Base = &bufs[i][0]
			r.iov[i].SetLen(len(bufs[i]))
		}
		raceWriteBuffer(bufs[i])
		h.Iov = &r.iov[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.sa[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Control = &r.oob[i][0]
		h.SetControllen(rOOBSlot)
	}
	r.nh, r.n, r.errno, r.next, r.off = nh, 0, 0, 0, 0
	r.bufs = bufs
	err = r.rc.Read(r.fn)
	clear(r.iov[:nh])
	if err == nil && r.errno != 0 {
		err = os.NewSyscallError("recvmmsg", r.errno)
	}
	if err != nil {
		r.n = 0
		r.bufs = nil
		return 0, err
	}
	return r.split(out), nil
}

// split fills out with the packets of the pending messages, cutting
// GRO-coalesced buffers at the segment size the UDP_GRO cmsg reports.
func (r *mmsgReader) split(out []Packet) int {
	n := 0
	for r.next < r.n && n < len(out) {
		i := r.next
		h := &r.hs[i]
		data := r.bufs[i][:min(int(h.len), len(r.bufs[i]))]
		src := getSockaddr(&r.sa[i])
		seg := 0
		walkCmsgs(r.oob[i][:h.hdr.Controllen], func(level, typ int32, d []byte) {
			if level == unix.SOL_UDP && typ == unix.UDP_GRO && len(d) >= 4 {
				seg = int(binary.NativeEndian.Uint32(d))
			}
		})
		if len(data) == 0 { // an empty datagram is a packet too
			out[n] = Packet{Data: data, Src: src}
			n++
			r.next++
			continue
		}
		if seg <= 0 {
			seg = len(data)
		}
		for r.off < len(data) && n < len(out) {
			end := min(r.off+seg, len(data))
			out[n] = Packet{Data: data[r.off:end], Src: src}
			n++
			r.off = end
		}
		if r.off >= len(data) {
			r.next++
			r.off = 0
		}
	}
	if r.next >= r.n {
		r.bufs = nil
	}
	return n
}
