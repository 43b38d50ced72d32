package udpio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const blk = 1468 // TFTP blksize that fits a 1500-byte Ethernet MTU (RFC 2348 example)

// window returns n datagrams: a 4-byte header holding the index, and a
// payload cut from one big buffer (as from an mmap); the last is short
// (lastLen bytes of payload) unless lastLen == blk.
func window(n, lastLen int) []Datagram {
	big := make([]byte, n*blk)
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	ds := make([]Datagram, n)
	for i := range ds {
		h := make([]byte, 4)
		binary.BigEndian.PutUint32(h, uint32(i))
		l := blk
		if i == n-1 {
			l = lastLen
		}
		ds[i] = Datagram{Hdr: h, Payload: big[i*blk : i*blk+l]}
	}
	return ds
}

func joined(d Datagram) []byte { return append(append([]byte(nil), d.Hdr...), d.Payload...) }

// mode forces a send path on top of what the kernel offers.
type mode struct {
	name      string
	mmsg, gso bool
	tailBug   bool
}

var modes = []mode{
	{name: "gso", mmsg: true, gso: true},
	{name: "gso-equal-tail-bug", mmsg: true, gso: true, tailBug: true},
	{name: "mmsg", mmsg: true},
	{name: "single"},
}

func (m mode) caps(t testing.TB) Caps {
	p := Probe()
	if m.gso && !p.GSO || m.mmsg && !p.MMsg {
		t.Skipf("kernel %s lacks this path: %v", p.KernelRelease, p)
	}
	return Caps{MMsg: m.mmsg, GSO: m.gso, GSOMaxSegments: gsoMaxSegments, GSOEqualTailBug: m.tailBug, KernelRelease: p.KernelRelease}
}

func listen(t testing.TB, addr string, o Options, caps Caps) *Conn {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	if ap.Addr() == netip.IPv6Unspecified() {
		network = "udp" // dual-stack; "udp6" would set IPV6_V6ONLY
	}
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		if ap.Addr().Is6() {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	c, err := newConn(uc, o, caps)
	if err != nil {
		uc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvAll reads n datagrams with ReadFrom, one per call.
func recvAll(t *testing.T, c *Conn, n int) [][]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard, not a timing assertion
	var got [][]byte
	buf := make([]byte, 65536)
	for len(got) < n {
		m, _, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), n, err)
		}
		got = append(got, append([]byte(nil), buf[:m]...))
	}
	return got
}

func checkWindow(t *testing.T, ds []Datagram, got [][]byte) {
	t.Helper()
	if len(got) != len(ds) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(ds))
	}
	for i, d := range ds {
		if !bytes.Equal(got[i], joined(d)) {
			t.Fatalf("datagram %d: got %d bytes (index %d), want %d bytes", i, len(got[i]),
				binary.BigEndian.Uint32(got[i]), d.Len())
		}
	}
}

func TestWriteDatagramsLoopback(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			caps := m.caps(t)
			rx := listen(t, "127.0.0.1:0", Options{RcvBuf: 8 << 20}, Caps{})
			tx := listen(t, "127.0.0.1:0", Options{SndBuf: 4 << 20}, caps)
			ds := window(64, 1000)
			syscalls, err := tx.WriteDatagrams(rx.LocalAddr(), ds)
			if err != nil {
				t.Fatal(err)
			}
			checkWindow(t, ds, recvAll(t, rx, len(ds)))
			st := tx.Stats()
			t.Logf("%d datagrams in %d syscalls, %+v", len(ds), syscalls, st)
			if st.Datagrams != 64 || st.Syscalls != uint64(syscalls) || st.SendErrors != 0 {
				t.Errorf("stats %+v after %d syscalls", st, syscalls)
			}
			switch m.name {
			case "gso": // 44 + 20 segments, one sendmmsg
				if syscalls > 2 || st.GSOBatches != 2 {
					t.Errorf("gso: %d syscalls, %d GSO batches; want <= 2 and 2", syscalls, st.GSOBatches)
				}
			case "gso-equal-tail-bug": // 19 singles and one run of 45 ending short
				if syscalls > 2 || st.GSOBatches != 1 {
					t.Errorf("gso with tail bug: %d syscalls, %d GSO batches; want <= 2 and 1", syscalls, st.GSOBatches)
				}
			case "mmsg":
				if syscalls != 1 || st.MMsgBatches != 1 || st.GSOBatches != 0 {
					t.Errorf("mmsg: %d syscalls, %+v; want 1 sendmmsg", syscalls, st)
				}
			case "single":
				if syscalls != 64 || st.Singles != 64 || st.MMsgBatches != 0 {
					t.Errorf("single: %d syscalls, %+v; want 64 sendmsg", syscalls, st)
				}
			}
		})
	}
}

// TestWriteDatagramsIPv6 covers the sockaddr_in6 path (IPv6 is not the
// focus: PXE is IPv4) on ::1 and, on a dual-stack socket, to a v4 peer.
func TestWriteDatagramsIPv6(t *testing.T) {
	caps := mode{mmsg: true, gso: true}.caps(t)
	tx := listen(t, "[::]:0", Options{SndBuf: 4 << 20}, caps)
	for _, addr := range []string{"[::1]:0", "127.0.0.1:0"} {
		rx := listen(t, addr, Options{RcvBuf: 8 << 20}, Caps{})
		ds := window(64, 9)
		if _, err := tx.WriteDatagrams(rx.LocalAddr(), ds); err != nil {
			t.Fatalf("to %v: %v", rx.LocalAddr(), err)
		}
		checkWindow(t, ds, recvAll(t, rx, len(ds)))
	}
	if st := tx.Stats(); st.GSOBatches != 4 || st.Datagrams != 128 {
		t.Errorf("%+v", st)
	}
}

// TestWriteDatagramsChunks sends more than maxBatch datagrams in one call.
func TestWriteDatagramsChunks(t *testing.T) {
	caps := mode{mmsg: true, gso: true}.caps(t)
	rx := listen(t, "127.0.0.1:0", Options{RcvBuf: 16 << 20}, Caps{})
	tx := listen(t, "127.0.0.1:0", Options{SndBuf: 8 << 20}, caps)
	ds := window(300, 7)
	syscalls, err := tx.WriteDatagrams(rx.LocalAddr(), ds)
	if err != nil {
		t.Fatal(err)
	}
	checkWindow(t, ds, recvAll(t, rx, len(ds)))
	if syscalls < 3 {
		t.Errorf("%d syscalls for 3 chunks", syscalls)
	}
}

func TestEqualTailBugLoopback(t *testing.T) {
	caps := mode{mmsg: true, gso: true, tailBug: true}.caps(t)
	rx := listen(t, "127.0.0.1:0", Options{RcvBuf: 8 << 20}, Caps{})
	tx := listen(t, "127.0.0.1:0", Options{SndBuf: 4 << 20}, caps)

	equal := window(10, blk)
	if _, err := tx.WriteDatagrams(rx.LocalAddr(), equal); err != nil {
		t.Fatal(err)
	}
	checkWindow(t, equal, recvAll(t, rx, len(equal)))
	if st := tx.Stats(); st.GSOBatches != 0 || st.Datagrams != 10 {
		t.Errorf("10 equal datagrams with the tail bug: %+v, want no GSO batch", st)
	}

	short := window(10, 3)
	if _, err := tx.WriteDatagrams(rx.LocalAddr(), short); err != nil {
		t.Fatal(err)
	}
	checkWindow(t, short, recvAll(t, rx, len(short)))
	if st := tx.Stats(); st.GSOBatches != 1 || st.Datagrams != 20 {
		t.Errorf("window ending short with the tail bug: %+v, want one GSO batch", st)
	}
}

// fakeWriter is a batch writer that records what it is given, splitting
// GSO messages as the kernel would, and fails on request.
type fakeWriter struct {
	failGSO   error // returned once, by the first call whose first message carries UDP_SEGMENT
	failAt    int   // with failGSO: only once this many calls were made
	failAny   error // returned once by call number failAnyAt
	failAnyAt int
	partial   []int // message counts the next calls accept (then all)
	calls     int
	gsoMsgs   int
	got       [][]byte
}

func (f *fakeWriter) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	f.calls++
	if f.failGSO != nil && f.calls > f.failAt && gsoSize(ms[0].OOB) > 0 {
		err := f.failGSO
		f.failGSO = nil
		return 0, err
	}
	if f.failAny != nil && f.calls == f.failAnyAt {
		return 0, f.failAny
	}
	n := len(ms)
	if len(f.partial) > 0 {
		n = min(n, f.partial[0])
		f.partial = f.partial[1:]
	}
	for _, m := range ms[:n] {
		var b []byte
		for _, p := range m.Buffers {
			b = append(b, p...)
		}
		seg := gsoSize(m.OOB)
		if seg == 0 {
			f.got = append(f.got, b)
			continue
		}
		f.gsoMsgs++
		for len(b) > 0 {
			k := min(seg, len(b))
			f.got = append(f.got, b[:k])
			b = b[k:]
		}
	}
	return n, nil
}

func gsoSize(oob []byte) int {
	seg := 0
	walkCmsgs(oob, func(level, typ int32, d []byte) {
		if level == unix.SOL_UDP && typ == unix.UDP_SEGMENT && len(d) >= 2 {
			seg = int(binary.NativeEndian.Uint16(d))
		}
	})
	return seg
}

func fakeConn(w batchWriter, gso bool) *Conn {
	return &Conn{caps: Caps{MMsg: true, GSO: gso, GSOMaxSegments: gsoMaxSegments}, w: w}
}

var dst = netip.MustParseAddrPort("192.0.2.7:4242")

func TestGSOFallbackOnEIO(t *testing.T) {
	for _, errno := range []syscall.Errno{unix.EIO, unix.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			f := &fakeWriter{failGSO: os.NewSyscallError("sendmmsg", errno)}
			c := fakeConn(f, true)
			ds := window(64, 100)
			syscalls, err := c.WriteDatagrams(dst, ds)
			if err != nil {
				t.Fatal(err)
			}
			checkWindow(t, ds, f.got)
			st := c.Stats()
			if st.GSOFallbacks != 1 || c.Caps().GSO || f.gsoMsgs != 0 || st.GSOBatches != 0 || st.Datagrams != 64 {
				t.Errorf("after EIO: %+v, caps %v, %d GSO messages delivered", st, c.Caps(), f.gsoMsgs)
			}
			if syscalls != 2 || st.SendErrors != 0 {
				t.Errorf("%d syscalls (want the failed one + 1), %+v", syscalls, st)
			}
			// GSO stays off for this Conn.
			f.got = nil
			if _, err := c.WriteDatagrams(dst, ds); err != nil {
				t.Fatal(err)
			}
			checkWindow(t, ds, f.got)
			if f.gsoMsgs != 0 || c.Stats().GSOFallbacks != 1 {
				t.Errorf("GSO used again after the fallback: %d messages", f.gsoMsgs)
			}
		})
	}
}

// TestGSOFallbackMidBatch: the kernel takes the first GSO message, then the
// second fails; only the unsent datagrams are sent again, once.
func TestGSOFallbackMidBatch(t *testing.T) {
	f := &fakeWriter{partial: []int{1}, failGSO: os.NewSyscallError("sendmmsg", unix.EIO), failAt: 1}
	c := fakeConn(f, true)
	ds := window(64, 100)
	syscalls, err := c.WriteDatagrams(dst, ds)
	if err != nil {
		t.Fatal(err)
	}
	checkWindow(t, ds, f.got)
	st := c.Stats()
	if syscalls != 3 || st.GSOBatches != 1 || st.GSOFallbacks != 1 || st.Datagrams != 64 {
		t.Errorf("%d syscalls, %+v", syscalls, st)
	}
}

func TestPartialSend(t *testing.T) {
	tests := []struct {
		name     string
		gso      bool
		partial  []int // messages the kernel accepts per call, then all
		syscalls int
		err      bool
	}{
		// 100 messages: 1, 3, 5, then the remaining 91.
		{"mmsg", false, []int{1, 3, 5}, 4, false},
		// 3 GSO messages of 44, 44 and 12 segments: 1, then the other 2.
		{"gso", true, []int{1, 3, 5}, 2, false},
		// A kernel that takes nothing and reports nothing must not spin.
		{"mmsg no progress", false, []int{1, 0}, 2, true},
		{"gso no progress", true, []int{1, 0}, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeWriter{partial: tt.partial}
			c := fakeConn(f, tt.gso)
			ds := window(100, 10)
			syscalls, err := c.WriteDatagrams(dst, ds)
			if (err != nil) != tt.err || syscalls != tt.syscalls {
				t.Fatalf("%d syscalls, err %v; want %d, error %t", syscalls, err, tt.syscalls, tt.err)
			}
			if tt.err {
				checkWindow(t, ds[:len(f.got)], f.got)
				return
			}
			checkWindow(t, ds, f.got)
			if st := c.Stats(); st.Datagrams != 100 || st.Syscalls != uint64(tt.syscalls) || st.MMsgBatches != uint64(tt.syscalls) {
				t.Errorf("%+v", st)
			}
		})
	}
}

func TestSendErrorStops(t *testing.T) {
	f := &fakeWriter{partial: []int{10}, failAny: os.NewSyscallError("sendmmsg", unix.EPERM), failAnyAt: 2}
	c := fakeConn(f, false)
	ds := window(64, blk)
	syscalls, err := c.WriteDatagrams(dst, ds)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("err = %v, want EPERM", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Addr.String() != dst.String() {
		t.Errorf("err = %#v, want a *net.OpError naming %v", err, dst)
	}
	checkWindow(t, ds[:10], f.got)
	if st := c.Stats(); syscalls != 2 || st.SendErrors != 1 || st.Datagrams != 10 || st.GSOFallbacks != 0 {
		t.Errorf("%d syscalls, %+v", syscalls, st)
	}
}

func TestWriteDatagramsAllocs(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			caps := m.caps(t)
			// Nobody reads rx: once its buffer is full the kernel drops, and
			// the receiver allocates nothing that AllocsPerRun would count.
			rx := listen(t, "127.0.0.1:0", Options{RcvBuf: 64 << 10}, Caps{})
			tx := listen(t, "127.0.0.1:0", Options{SndBuf: 4 << 20}, caps)
			ds := window(64, 1000)
			dst := rx.LocalAddr()
			f := func() {
				if _, err := tx.WriteDatagrams(dst, ds); err != nil {
					t.Fatal(err)
				}
			}
			f()
			if a := testing.AllocsPerRun(100, f); a != 0 {
				t.Errorf("%v allocs per 64-datagram window, want 0", a)
			}
		})
	}
}

func TestReadBatchGRO(t *testing.T) {
	for _, m := range []mode{{name: "gso", mmsg: true, gso: true}, {name: "mmsg", mmsg: true}, {name: "single"}} {
		t.Run(m.name, func(t *testing.T) {
			caps := m.caps(t)
			rx := listen(t, "127.0.0.1:0", Options{RcvBuf: 8 << 20}, caps)
			gro := rx.EnableGRO()
			tx := listen(t, "127.0.0.1:0", Options{SndBuf: 4 << 20}, caps)
			ds := window(64, 1000)
			bufs := make([][]byte, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 65536)
			}
			out := make([]Packet, 5) // fewer than a GRO run: exercises the pending packets
			rx.SetReadDeadline(time.Now().Add(10 * time.Second))

			// read reads one window; keep copies the packets (Data aliases
			// bufs, which later reads reuse). It counts packets that share a
			// buffer with the one before: GRO-coalesced reads split again.
			var got [][]byte
			var shared int
			read := func(keep bool) {
				for n := 0; n < len(ds); {
					k, err := rx.ReadBatch(bufs, out)
					if err != nil {
						t.Fatalf("after %d packets: %v", n, err)
					}
					for i, p := range out[:k] {
						if p.Src != tx.LocalAddr() {
							t.Fatalf("packet from %v, want %v", p.Src, tx.LocalAddr())
						}
						if i > 0 && sameBuffer(bufs, out[i-1].Data, p.Data) {
							shared++
						}
						if keep {
							got = append(got, append([]byte(nil), p.Data...))
						}
					}
					n += k
				}
			}
			if _, err := tx.WriteDatagrams(rx.LocalAddr(), ds); err != nil {
				t.Fatal(err)
			}
			read(true)
			checkWindow(t, ds, got)
			t.Logf("GRO %t, %d of %d packets split from a coalesced read", gro, shared, len(ds))
			if m.gso && gro && shared == 0 {
				t.Errorf("GSO sender, GRO receiver: no coalesced read was split")
			}

			// Steady state: a window sent and read back allocates nothing.
			a := testing.AllocsPerRun(50, func() {
				if _, err := tx.WriteDatagrams(rx.LocalAddr(), ds); err != nil {
					t.Fatal(err)
				}
				read(false)
			})
			if a != 0 {
				t.Errorf("%v allocs per window sent and read", a)
			}
		})
	}
}

// sameBuffer reports whether a and b lie in the same element of bufs.
func sameBuffer(bufs [][]byte, a, b []byte) bool {
	in := func(buf, p []byte) bool {
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
		x := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
		return x >= lo && x < lo+uintptr(len(buf))
	}
	for _, buf := range bufs {
		if in(buf, a) {
			return in(buf, b)
		}
	}
	return false
}

// TestPktinfo: a listener on the wildcard address learns which local
// address each request was sent to and replies from it. Linux routes all
// of 127/8 to lo, so 127.0.0.2 works without configuration.
func TestPktinfo(t *testing.T) {
	tests := []struct{ listen, local, client string }{
		{"0.0.0.0:0", "127.0.0.1", "127.0.0.1:0"},
		{"0.0.0.0:0", "127.0.0.2", "127.0.0.1:0"},
		{"[::]:0", "127.0.0.2", "127.0.0.1:0"}, // dual-stack, v4 peer
		{"[::]:0", "::1", "[::1]:0"},
	}
	for _, tt := range tests {
		t.Run(tt.listen+"->"+tt.local, func(t *testing.T) {
			srv := listen(t, tt.listen, Options{Pktinfo: true}, Probe())
			cl := listen(t, tt.client, Options{}, Probe())
			to := netip.AddrPortFrom(netip.MustParseAddr(tt.local), srv.LocalAddr().Port())
			if err := cl.WriteTo([]byte("rrq"), to, netip.Addr{}); err != nil {
				t.Skipf("cannot reach %v: %v", to, err)
			}
			srv.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, 100)
			n, src, dst, err := srv.ReadFrom(b)
			if err != nil {
				t.Fatal(err)
			}
			if string(b[:n]) != "rrq" || src != cl.LocalAddr() || dst != to.Addr() {
				t.Fatalf("ReadFrom = %q from %v to %v; want rrq from %v to %v", b[:n], src, dst, cl.LocalAddr(), to.Addr())
			}
			if err := srv.WriteTo([]byte("oack"), src, dst); err != nil {
				t.Fatal(err)
			}
			cl.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, from, _, err := cl.ReadFrom(b)
			if err != nil {
				t.Fatal(err)
			}
			if string(b[:n]) != "oack" || from != to {
				t.Errorf("reply %q from %v, want oack from %v", b[:n], from, to)
			}
			if st := srv.Stats(); st.Singles != 1 || st.Datagrams != 1 {
				t.Errorf("%+v", st)
			}
			// Without pktinfo, dst is invalid.
			if err := srv.WriteTo([]byte("x"), src, netip.Addr{}); err != nil {
				t.Fatal(err)
			}
			if _, _, dst, err := cl.ReadFrom(b); err != nil || dst.IsValid() {
				t.Errorf("ReadFrom without pktinfo: dst %v, err %v", dst, err)
			}
		})
	}
}

func TestWriteToAllocs(t *testing.T) {
	srv := listen(t, "0.0.0.0:0", Options{Pktinfo: true}, Probe())
	cl := listen(t, "127.0.0.1:0", Options{RcvBuf: 64 << 10}, Probe())
	src := netip.MustParseAddr("127.0.0.2")
	b := make([]byte, 516)
	f := func() {
		if err := srv.WriteTo(b, cl.LocalAddr(), src); err != nil {
			t.Fatal(err)
		}
		if err := cl.WriteTo(b, netip.AddrPortFrom(src, srv.LocalAddr().Port()), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := srv.ReadFrom(b); err != nil {
			t.Fatal(err)
		}
	}
	f()
	if a := testing.AllocsPerRun(100, f); a != 0 {
		t.Errorf("%v allocs per WriteTo/ReadFrom round", a)
	}
}

func TestNewSocketOptions(t *testing.T) {
	c := listen(t, "127.0.0.1:0", Options{SndBuf: 3 << 20, RcvBuf: 5 << 20}, Probe())
	snd, rcv, err := c.SocketBuffers()
	t.Logf("sndbuf %s, rcvbuf %s, shortfall: %v", sizeString(snd), sizeString(rcv), err)
	if os.Geteuid() == 0 && (err != nil || snd < 3<<20 || rcv < 5<<20) {
		t.Errorf("as root: sndbuf %d, rcvbuf %d, %v", snd, rcv, err)
	}
	if err == nil && (snd < 3<<20 || rcv < 5<<20) {
		t.Errorf("short buffers not reported: %d, %d", snd, rcv)
	}
	var pmtu int
	c.sys.rc.Control(func(fd uintptr) {
		pmtu, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER)
	})
	if err != nil || pmtu != unix.IP_PMTUDISC_DONT {
		t.Errorf("IP_MTU_DISCOVER = %d (%v), want IP_PMTUDISC_DONT", pmtu, err)
	}
	if c.LocalAddr().Addr() != netip.MustParseAddr("127.0.0.1") || c.LocalAddr().Port() == 0 {
		t.Errorf("LocalAddr %v", c.LocalAddr())
	}
}

func TestMmsghdrLayout(t *testing.T) {
	// struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; }, padded.
	want := unsafe.Sizeof(unix.Msghdr{}) + 4
	if a := unsafe.Alignof(unix.Msghdr{}); want%a != 0 {
		want += a - want%a
	}
	if got := unsafe.Sizeof(mmsghdr{}); got != want || unsafe.Offsetof(mmsghdr{}.len) != unsafe.Sizeof(unix.Msghdr{}) {
		t.Errorf("mmsghdr is %d bytes, want %d", got, want)
	}
}

func TestProbe(t *testing.T) {
	p := Probe()
	t.Logf("caps: %v", p)
	if p.GSOMaxSegments != 64 || p.KernelRelease == "" {
		t.Errorf("Probe() = %v", p)
	}
	if p.GSO && !p.MMsg {
		t.Errorf("GSO without mmsg: %v", p)
	}
}

// TestRxqOverflowDrops overflows a small receive queue on loopback and
// checks that the next read reports the kernel's drop count (SO_RXQ_OVFL),
// and that a socket without the option reports none.
func TestRxqOverflowDrops(t *testing.T) {
	for _, on := range []bool{true, false} {
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(uc, Options{RcvBuf: 4096, RxqOverflow: on, Pktinfo: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// SO_RCVBUF is a plain option here so the queue stays small even
		// as root (SO_RCVBUFFORCE would also be small: 4 KiB).
		tx, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		p := make([]byte, 1000)
		for range 200 { // far more than a 4 KiB queue (plus skb overhead) holds
			tx.Write(p)
		}
		// The count is stamped on a datagram when it is queued: drain what
		// queued before the drops, then read one sent after them.
		b := make([]byte, 2048)
		for range 200 {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, _, err := c.ReadFrom(b); err != nil {
				break
			}
		}
		tx.Write(p)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, _, err := c.ReadFrom(b); err != nil {
			t.Fatal(err)
		}
		if got := c.Drops(); on && got == 0 {
			t.Errorf("RxqOverflow on: Drops() = 0 after 200 datagrams into a 4 KiB queue")
		} else if !on && got != 0 {
			t.Errorf("RxqOverflow off: Drops() = %d, want 0", got)
		}
	}
}

// TestSockaddrScope: a link-local destination's decimal zone becomes the
// sockaddr_in6 scope id, and a received one's scope id its zone, so
// sendmmsg and recvmmsg keep the interface of a link-local peer.
func TestSockaddrScope(t *testing.T) {
	var sa unix.RawSockaddrInet6
	if putSockaddr(&sa, net.ParseIP("fe80::5"), 69, "3", true) != unix.SizeofSockaddrInet6 || sa.Scope_id != 3 {
		t.Fatalf("scope id %d", sa.Scope_id)
	}
	if got := getSockaddr(&sa); got != netip.MustParseAddrPort("[fe80::5%3]:69") {
		t.Fatalf("read back %s", got)
	}
	if putSockaddr(&sa, net.ParseIP("192.0.2.1"), 69, "", true); getSockaddr(&sa) != netip.MustParseAddrPort("192.0.2.1:69") {
		t.Fatalf("v4-mapped read back %s", getSockaddr(&sa))
	}
	c := &Conn{}
	c.sys.inet6 = true
	b := c.pktinfoInto(make([]byte, 40), netip.MustParseAddr("fe80::1%4"))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	if pi.Ifindex != 4 || netip.AddrFrom16(pi.Addr) != netip.MustParseAddr("fe80::1") {
		t.Fatalf("IPV6_PKTINFO %+v", *pi)
	}
}
