package udpio

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

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
			if w.flags&unix.MSG_DONTWAIT == 0 {
				return false
			}
			w.errno = e // the caller asked not to wait: EAGAIN is its error
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
				l := putSockaddr(&w.sa[nh], ua.IP, ua.Port, ua.Zone, w.inet6)
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

// rOOBSlot is the control room per received message: UDP_GRO (an int) and
// IP_PKTINFO cmsgs.
const rOOBSlot = 64

// mmsgReader is ReadBatch's state: recvmmsg headers bound to the caller's
// buffers, and the packets of the last read not yet returned.
type mmsgReader struct {
	c      *Conn // for the pktinfo and drop-count cmsgs
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
		r = &mmsgReader{c: c, rc: c.sys.rc, single: !c.caps.MMsg}
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
		var dst netip.Addr
		walkCmsgs(r.oob[i][:h.hdr.Controllen], func(level, typ int32, d []byte) {
			if level == unix.SOL_UDP && typ == unix.UDP_GRO && len(d) >= 4 {
				seg = int(binary.NativeEndian.Uint32(d))
				return
			}
			if a, ok := r.c.controlAddr(level, typ, d); ok {
				dst = a
			}
		})
		if len(data) == 0 { // an empty datagram is a packet too
			out[n] = Packet{Data: data, Src: src, Dst: dst}
			n++
			r.next++
			continue
		}
		if seg <= 0 {
			seg = len(data)
		}
		for r.off < len(data) && n < len(out) {
			end := min(r.off+seg, len(data))
			out[n] = Packet{Data: data[r.off:end], Src: src, Dst: dst}
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
