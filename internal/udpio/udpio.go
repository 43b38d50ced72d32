// Package udpio is mtftpd's batched UDP I/O: it sends a TFTP window of
// DATA datagrams in as few syscalls as the kernel allows (sendmmsg, and UDP
// GSO for runs of equal-size blocks), replies from the address a request
// arrived on (IP_PKTINFO), and reads in batches (recvmmsg, UDP GRO) for the
// client and the load generator.
//
// It must never allocate per packet in steady state: every message header,
// iovec, control buffer and destination address lives in the Conn and is
// reused, and payloads are sent where they lie (a read-only mmap) as a
// second iovec, never copied.
//
// Capabilities are probed once per process (Probe) and a Conn falls back,
// silently and per Conn, from GSO to sendmmsg to one sendmsg per datagram;
// callers never branch on the OS. OS detail lives in the _linux.go files,
// one per feature (udpio_linux.go: socket setup; mmsg_linux.go,
// gso_linux.go, pktinfo_linux.go, sockaddr_linux.go, features_linux.go);
// other systems get a plain one-datagram-per-syscall fallback
// (udpio_other.go).
//
// WriteDatagrams keeps its message headers and iovecs in the Conn: one
// goroutine at a time may call it. WriteTo may be called from any number of
// goroutines, also while WriteDatagrams runs (mtftp's native sessions
// answer joins while their stream sends): it shares only the socket, which
// the kernel serialises, and atomic counters with it, and its cmsg buffer
// is under a mutex. Reads (ReadFrom, ReadBatch) are not safe for concurrent
// use; one reader may run beside the writers. Caps, Stats, LocalAddr and
// SetReadDeadline are safe to call from any goroutine.
package udpio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"
)

const (
	// maxBatch is how many datagrams (and so at most how many messages) one
	// WriteDatagrams chunk holds: two RFC 7440 windows of 64 blocks. Longer
	// calls are split into chunks of maxBatch.
	maxBatch = 128

	// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS (1 << 6,
	// include/linux/udp.h): a UDP_SEGMENT send of more segments fails with
	// EINVAL.
	gsoMaxSegments = 64

	// maxGSOPayload bounds one GSO super-datagram: it must still fit one UDP
	// length, 65535 - 20 (IPv4 header) - 8 (UDP header) = 65507 bytes of
	// payload (docs/lab-notes.md, "UDP send paths": 44 segments of 1472
	// bytes, not 64, else EMSGSIZE). IPv6 would allow 65527; the IPv4
	// bound is used for both.
	maxGSOPayload = 65507
)

// Datagram is one UDP payload made of Hdr followed by Payload. Both slices
// are borrowed for the duration of the call that is given them and are
// never written to nor retained.
type Datagram struct{ Hdr, Payload []byte }

// Len is the datagram's UDP payload length.
func (d Datagram) Len() int { return len(d.Hdr) + len(d.Payload) }

// Packet is one datagram read by ReadBatch. Data aliases the buffer passed
// to ReadBatch.
type Packet struct {
	Data []byte
	Src  netip.AddrPort
	// Dst is the address the datagram was sent to (IP_PKTINFO) when the
	// Conn has Options.Pktinfo (Linux); otherwise it is invalid.
	Dst netip.Addr
}

// Caps records what the kernel offers. Probe fills it once per process on a
// throwaway loopback socket; callers log it at start.
type Caps struct {
	MMsg bool // sendmmsg/recvmmsg usable
	GSO  bool // UDP_SEGMENT usable (implies MMsg here: GSO messages go out through sendmmsg)

	// GSOMaxSegments is the kernel's UDP_MAX_SEGMENTS, 64 since UDP GSO
	// appeared (v4.18, include/linux/udp.h); it cannot be queried.
	GSOMaxSegments int

	// GSOEqualTailBug is set on kernels with the equal-length-tail UDP GSO
	// bug: introduced in v7.0-rc1 by torvalds/linux b10b446, fixed in
	// v7.1-rc5 by 78effd8 and 5f17ae0; mangled UDP headers and checksums on
	// some drivers (tailscale works around it as NodeAttrNeverGSOEqualTail,
	// tailscale/tailscale#19918). On such kernels a GSO message whose last
	// segment has the same length as the others is not sent with GSO;
	// messages with a shorter tail still are.
	GSOEqualTailBug bool

	KernelRelease string // uname -r
}

// String is Caps for a log line.
func (c Caps) String() string {
	return fmt.Sprintf("mmsg=%t gso=%t gso_max_segments=%d gso_equal_tail_bug=%t kernel=%q",
		c.MMsg, c.GSO, c.GSOMaxSegments, c.GSOEqualTailBug, c.KernelRelease)
}

// MarshalZerologObject lets callers log Caps with zerolog's Object.
func (c Caps) MarshalZerologObject(e *zerolog.Event) {
	e.Bool("mmsg", c.MMsg).Bool("gso", c.GSO).Int("gso_max_segments", c.GSOMaxSegments).
		Bool("gso_equal_tail_bug", c.GSOEqualTailBug).Str("kernel", c.KernelRelease)
}

var (
	probeOnce sync.Once
	probed    Caps
)

// Probe reports what this kernel offers, probed once per process and then
// cached. The kill switches MTFTPD_DISABLE_GSO=1 and MTFTPD_DISABLE_MMSG=1
// (which implies no GSO) are read once, at the first call.
func Probe() Caps {
	probeOnce.Do(func() { probed = capsFromEnv(os.Getenv, probeKernel()) })
	return probed
}

// capsFromEnv applies the environment kill switches to probed caps.
func capsFromEnv(getenv func(string) string, c Caps) Caps {
	if envTrue(getenv("MTFTPD_DISABLE_MMSG")) {
		c.MMsg = false
	}
	if !c.MMsg || envTrue(getenv("MTFTPD_DISABLE_GSO")) {
		c.GSO = false
	}
	return c
}

func envTrue(v string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	return err == nil && b
}

// ParseKernelRelease parses a uname -r string: "6.18.44-fc-v657" is 6, 18,
// rc 0; "7.1.0-rc4" and "7.1-rc4" are 7, 1, rc 4. rc is 0 for a release.
func ParseKernelRelease(s string) (major, minor int, rc int, ok bool) {
	num := func(s string) (n int, rest string, ok bool) {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 || i > 6 {
			return 0, s, false
		}
		n, _ = strconv.Atoi(s[:i])
		return n, s[i:], true
	}
	major, rest, ok := num(s)
	if !ok || !strings.HasPrefix(rest, ".") {
		return 0, 0, 0, false
	}
	minor, rest, ok = num(rest[1:])
	if !ok {
		return 0, 0, 0, false
	}
	if strings.HasPrefix(rest, ".") { // patch level, not needed
		if _, r, ok := num(rest[1:]); ok {
			rest = r
		}
	}
	// A release candidate is tagged "-rcN" directly after the version
	// (Makefile EXTRAVERSION); later suffixes are the builder's.
	if r, found := strings.CutPrefix(rest, "-rc"); found {
		if n, _, ok := num(r); ok {
			rc = n
		}
	}
	return major, minor, rc, true
}

// gsoEqualTailBuggy reports whether a kernel release is in the range with
// the equal-length-tail UDP GSO bug (see Caps.GSOEqualTailBug): every 7.0
// (stable 7.0.y may carry backported fixes, which cannot be told from the
// version, so they are treated as affected) and 7.1-rc1 to 7.1-rc4.
func gsoEqualTailBuggy(release string) bool {
	major, minor, rc, ok := ParseKernelRelease(release)
	if !ok || major != 7 {
		return false
	}
	switch minor {
	case 0:
		return true
	case 1:
		return rc >= 1 && rc <= 4
	}
	return false
}

// Stats counts what a Conn's send paths did. Every datagram's fate has a
// counter (docs/design.md, "Conventions"); Stats is a snapshot.
type Stats struct {
	Syscalls     uint64 // send syscalls made (sendmmsg and sendmsg), failed ones included
	Datagrams    uint64 // datagrams the kernel accepted
	GSOBatches   uint64 // GSO super-datagrams (UDP_SEGMENT messages) the kernel accepted
	MMsgBatches  uint64 // sendmmsg calls
	Singles      uint64 // sendmsg calls carrying one datagram (no-mmsg path, WriteTo)
	GSOFallbacks uint64 // times GSO was turned off on this Conn after EIO/EINVAL
	SendErrors   uint64 // send calls that returned an error to the caller
}

type stats struct {
	syscalls, datagrams, gsoBatches, mmsgBatches, singles, gsoFallbacks, sendErrors atomic.Uint64
}

// Options tunes the socket New upgrades. A zero size keeps the kernel's
// default.
type Options struct {
	SndBuf, RcvBuf int  // SO_SNDBUF/SO_RCVBUF wanted, in bytes
	Pktinfo        bool // IP_PKTINFO on reads: ReadFrom reports the local destination address
	// RxqOverflow turns on SO_RXQ_OVFL: ReadFrom takes the kernel's count
	// of datagrams dropped on this socket (receive queue full) from each
	// datagram's control data, for Drops. Linux only; elsewhere Drops is 0.
	RxqOverflow bool
}

// batchWriter is the narrow edge WriteDatagrams sends through: the raw
// sendmmsg writer in production (x/net's *ipv4.PacketConn has the same
// shape), a recording fake in tests. It returns how many messages, from the
// first, the kernel accepted; n < len(ms) with a nil error is a partial send.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Conn is a UDP socket upgraded for batched sends. See the package comment
// for what may run concurrently.
type Conn struct {
	uc    *net.UDPConn
	laddr netip.AddrPort
	caps  Caps        // probed caps, fixed at New
	noGSO atomic.Bool // GSO turned off at runtime (EIO/EINVAL)
	st    stats
	w     batchWriter

	sndGot, rcvGot int
	bufErr         error         // buffer sizes short of Options, nil if not
	drops          atomic.Uint64 // SO_RXQ_OVFL: the kernel's drop count as of the last read

	// Send state, reused by every WriteDatagrams call.
	dst   net.UDPAddr // destination; IP points into dstIP
	dstIP [16]byte
	plan  [maxBatch]span
	msgs  [maxBatch]ipv4.Message
	iov   [2 * maxBatch][]byte
	oob   [maxBatch][oobSlot]byte
	multi *multiState // WriteMessages' state (multi.go), made at its first call

	sys connSys // OS-specific state (udpio_linux.go, udpio_other.go)
}

// oobSlot is the room for one message's control data: a UDP_SEGMENT
// cmsg is CMSG_SPACE(2) = 24 bytes on 64-bit Linux.
const oobSlot = 32

// New upgrades c: it sets the socket buffers asked for (SO_SNDBUFFORCE /
// SO_RCVBUFFORCE first, which works as root, then the plain options, which
// the kernel caps at net.core.wmem_max/rmem_max), turns IP_PKTINFO on for
// reads if o.Pktinfo, and turns DF off (IP_MTU_DISCOVER = IP_PMTUDISC_DONT;
// docs/protocols.md §1.1: some PXE ROMs mishandle DF). Buffer sizes short of
// what was asked are not an error: see SocketBuffers. The Conn owns c from
// now on; Close closes it.
func New(c *net.UDPConn, o Options) (*Conn, error) {
	return newConn(c, o, Probe())
}

// newConn is New with explicit caps; tests force modes through it.
func newConn(uc *net.UDPConn, o Options, caps Caps) (*Conn, error) {
	if !caps.MMsg {
		caps.GSO = false
	}
	if caps.GSOMaxSegments <= 0 || caps.GSOMaxSegments > gsoMaxSegments {
		caps.GSOMaxSegments = gsoMaxSegments
	}
	c := &Conn{uc: uc, caps: caps}
	if ua, ok := uc.LocalAddr().(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		c.laddr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if err := c.setup(o); err != nil {
		return nil, err
	}
	return c, nil
}

// Caps reports this Conn's effective caps: the probed ones, with GSO off
// once a GSO send failed with EIO/EINVAL.
func (c *Conn) Caps() Caps {
	caps := c.caps
	caps.GSO = c.gsoOn()
	return caps
}

func (c *Conn) gsoOn() bool { return c.caps.GSO && !c.noGSO.Load() }

// Stats returns a snapshot of the send counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Syscalls:     c.st.syscalls.Load(),
		Datagrams:    c.st.datagrams.Load(),
		GSOBatches:   c.st.gsoBatches.Load(),
		MMsgBatches:  c.st.mmsgBatches.Load(),
		Singles:      c.st.singles.Load(),
		GSOFallbacks: c.st.gsoFallbacks.Load(),
		SendErrors:   c.st.sendErrors.Load(),
	}
}

// SocketBuffers reports SO_SNDBUF and SO_RCVBUF as the kernel reports them
// (which is twice what was set: socket(7)), and a non-nil error naming the
// shortfall when they are smaller than Options asked for
// ("sndbuf: wanted 8 MiB, got 416 KiB"), for the caller to log.
func (c *Conn) SocketBuffers() (snd, rcv int, err error) { return c.sndGot, c.rcvGot, c.bufErr }

// Drops reports how many datagrams the kernel dropped on this socket
// because its receive queue was full, as of the last ReadFrom (the count
// arrives with each datagram: Options.RxqOverflow). Safe to call at any
// time.
func (c *Conn) Drops() uint64 { return c.drops.Load() }

// BatchSize is the most datagrams one WriteDatagrams syscall carries.
const BatchSize = maxBatch

// UDPConn returns the underlying socket.
func (c *Conn) UDPConn() *net.UDPConn { return c.uc }

// LocalAddr is the socket's local address (IPv4-mapped addresses unmapped).
func (c *Conn) LocalAddr() netip.AddrPort { return c.laddr }

// Close closes the socket; blocked reads and writes return net.ErrClosed.
func (c *Conn) Close() error { return c.uc.Close() }

// SetReadDeadline sets the deadline for ReadFrom and ReadBatch; past it they
// return an error with Timeout() true.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// WriteDatagrams sends ds to dst in order, in as few syscalls as the caps
// allow, and returns how many syscalls it made and the first error:
//
//   - GSO: each run of equal-length datagrams (the last of a run may be
//     shorter, which ends it) becomes one message with a UDP_SEGMENT cmsg,
//     of at most GSOMaxSegments segments and maxGSOPayload bytes; all
//     messages go in one sendmmsg call. 64 blocks of 1468 bytes: 44 + 20
//     segments, one syscall.
//   - sendmmsg without GSO: one message per datagram, one call.
//   - neither: one sendmsg per datagram.
//
// The kernel may accept only part of a batch; the rest is sent by further
// calls. If a GSO message fails with EIO or EINVAL (a NIC or driver without
// checksum offload: quic-go#3911), GSO is turned off for this Conn, counted
// in GSOFallbacks, and the unsent datagrams are sent without it. On any
// other error the datagrams before the failing message have been sent.
//
// The Hdr and Payload slices are sent as two iovecs, never copied, and are
// not retained after the call returns. In steady state the call does not
// allocate. Calls of more than 128 datagrams are sent in chunks of 128.
func (c *Conn) WriteDatagrams(dst netip.AddrPort, ds []Datagram) (syscalls int, err error) {
	if len(ds) == 0 {
		return 0, nil
	}
	c.setDst(dst)
	for len(ds) > 0 {
		chunk := ds[:min(len(ds), maxBatch)]
		n, err := c.writeChunk(chunk)
		syscalls += n
		if err != nil {
			c.st.sendErrors.Add(1)
			return syscalls, &net.OpError{Op: "write", Net: "udp", Source: net.UDPAddrFromAddrPort(c.laddr),
				Addr: net.UDPAddrFromAddrPort(dst), Err: err}
		}
		ds = ds[len(chunk):]
	}
	return syscalls, nil
}

// setDst points the reusable destination at dst without allocating. A
// socket of family AF_INET6 gets v4 destinations as v4-mapped addresses.
func (c *Conn) setDst(dst netip.AddrPort) { c.putAddr(&c.dst, &c.dstIP, dst) }

// putAddr points ua, whose IP lives in ip, at dst without allocating.
func (c *Conn) putAddr(ua *net.UDPAddr, ip *[16]byte, dst netip.AddrPort) {
	a := dst.Addr()
	if a.Is4In6() && !c.sys.inet6 {
		a = a.Unmap()
	}
	if a.Is4() && !c.sys.inet6 {
		b := a.As4()
		copy(ip[:4], b[:])
		ua.IP = ip[:4]
	} else {
		*ip = a.As16()
		ua.IP = ip[:]
	}
	ua.Port = int(dst.Port())
	ua.Zone = a.Zone() // a link-local destination's interface (zone.go)
}

// writeChunk sends at most maxBatch datagrams.
func (c *Conn) writeChunk(ds []Datagram) (syscalls int, err error) {
	defer clear(c.iov[:2*len(ds)]) // do not keep the caller's buffers alive
	plan := planMessages(ds, c.gsoOn(), c.caps.GSOMaxSegments, c.caps.GSOEqualTailBug, c.plan[:0])
	msgs := c.buildMsgs(ds, plan)
	for len(msgs) > 0 {
		n, werr := c.w.WriteBatch(msgs, 0)
		syscalls++
		n = max(0, min(n, len(msgs)))
		c.account(plan[:n])
		msgs, plan = msgs[n:], plan[n:]
		if werr != nil {
			if len(plan) > 0 && plan[0].seg > 0 && isGSOError(werr) {
				// Resend the rest without GSO. The failed message was not
				// sent: sendmmsg reports an error only for its first message.
				c.noGSO.Store(true)
				c.st.gsoFallbacks.Add(1)
				ds = ds[plan[0].start:]
				plan = planMessages(ds, false, 0, false, c.plan[:0])
				msgs = c.buildMsgs(ds, plan)
				continue
			}
			return syscalls, werr
		}
		if n == 0 {
			return syscalls, errNoProgress
		}
	}
	return syscalls, nil
}

var errNoProgress = errors.New("udpio: the kernel took no message and reported no error")

// countSingle counts one send of one datagram (WriteTo) that returned
// err, and returns err.
func (c *Conn) countSingle(err error) error {
	c.st.syscalls.Add(1)
	c.st.singles.Add(1)
	if err != nil {
		c.st.sendErrors.Add(1)
		return err
	}
	c.st.datagrams.Add(1)
	return nil
}

// account counts the messages of plan as sent.
func (c *Conn) account(sent []span) {
	if c.caps.MMsg {
		c.st.mmsgBatches.Add(1)
	} else {
		c.st.singles.Add(1)
	}
	c.st.syscalls.Add(1)
	var dgs, gso uint64
	for _, s := range sent {
		dgs += uint64(s.end - s.start)
		if s.seg > 0 {
			gso++
		}
	}
	c.st.datagrams.Add(dgs)
	if gso > 0 {
		c.st.gsoBatches.Add(gso)
	}
}

// buildMsgs turns a plan into messages in the Conn's reusable arrays: the
// message for ds[s.start:s.end] has Buffers [h, p, h, p, ...] and, for a GSO
// run, a UDP_SEGMENT cmsg.
func (c *Conn) buildMsgs(ds []Datagram, plan []span) []ipv4.Message {
	for i, d := range ds {
		c.iov[2*i], c.iov[2*i+1] = d.Hdr, d.Payload
	}
	for k, s := range plan {
		m := &c.msgs[k]
		m.Buffers = c.iov[2*s.start : 2*s.end]
		m.Addr = &c.dst
		m.OOB = nil
		if s.seg > 0 {
			m.OOB = gsoControl(c.oob[k][:], s.seg)
		}
		m.N, m.NN, m.Flags = 0, 0, 0
	}
	return c.msgs[:len(plan)]
}

// span is one message of a send plan: datagrams [start, end), sent as one
// GSO super-datagram with segment size seg if seg > 0.
type span struct{ start, end, seg int }

// planMessages groups ds into messages (pure; see WriteDatagrams). Without
// GSO each datagram is its own message. With GSO, runs of equal length L
// (ended by a shorter datagram, a longer one, maxSegs or maxGSOPayload)
// become one message. With equalTailBug, a run whose last segment is as
// long as the others is sent as single messages instead, but only up to
// where a run that ends in a shorter datagram can start, so a window ending
// with a file's short last block keeps one GSO message.
func planMessages(ds []Datagram, gso bool, maxSegs int, equalTailBug bool, out []span) []span {
	out = out[:0]
	for i := 0; i < len(ds); {
		l := ds[i].Len()
		if !gso || l == 0 {
			out = append(out, span{i, i + 1, 0})
			i++
			continue
		}
		j, shortTail := gsoRun(ds, i, maxSegs)
		if equalTailBug && j-i > 1 && !shortTail {
			e := i + 1 // ds[i:e] all have length l
			for e < len(ds) && ds[e].Len() == l {
				e++
			}
			stop := e
			if e < len(ds) && ds[e].Len() > 0 && ds[e].Len() < l {
				// The longest run ending at the short ds[e]: (k-1)*l + tail.
				k := min(maxSegs, 1+(maxGSOPayload-ds[e].Len())/l)
				stop = e + 1 - k
			}
			stop = max(stop, i+1)
			for ; i < stop; i++ {
				out = append(out, span{i, i + 1, 0})
			}
			continue
		}
		seg := 0
		if j-i > 1 {
			seg = l
		}
		out = append(out, span{i, j, seg})
		i = j
	}
	return out
}

// gsoRun returns the end of the GSO run starting at ds[i], and whether it
// ended with a datagram shorter than ds[i].
func gsoRun(ds []Datagram, i, maxSegs int) (end int, shortTail bool) {
	l := ds[i].Len()
	n := l
	j := i + 1
	for j < len(ds) && j-i < maxSegs {
		lj := ds[j].Len()
		if lj > l || lj == 0 || n+lj > maxGSOPayload {
			break
		}
		n += lj
		j++
		if lj < l {
			return j, true
		}
	}
	return j, false
}

// sizeString formats a byte count for error messages: "8 MiB", "416 KiB".
func sizeString(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}
