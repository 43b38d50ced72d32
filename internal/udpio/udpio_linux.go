package udpio

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dontWait is WriteMessages' send flag: never wait for send-buffer room.
const dontWait = unix.MSG_DONTWAIT

// connSys is the Linux part of a Conn. This file sets the socket up
// (buffers, DF off, IP_PKTINFO, SO_RXQ_OVFL) and holds the one-datagram
// paths; the batch paths are in mmsg_linux.go, GSO and GRO in gso_linux.go,
// the address cmsgs in pktinfo_linux.go, raw sockaddrs in
// sockaddr_linux.go and the capability probe in features_linux.go.
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
		if c.sndGot, short, serr = setBufNamed(s, "sndbuf", unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.SndBuf, short); serr != nil {
			return
		}
		if c.rcvGot, short, serr = setBufNamed(s, "rcvbuf", unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.RcvBuf, short); serr != nil {
			return
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

// setBufNamed is setBuf for the buffer name ("sndbuf"): it fails if the
// size cannot be set at all, and appends to short when the kernel gave
// less than wanted.
func setBufNamed(s int, name string, force, plain, want int, short []error) (int, []error, error) {
	got, err := setBuf(s, force, plain, want)
	if err != nil {
		return 0, short, fmt.Errorf("udpio: %s %s: %w", name, sizeString(want), err)
	}
	if got < want {
		short = append(short, fmt.Errorf("%s: wanted %s, got %s", name, sizeString(want), sizeString(got)))
	}
	return got, short, nil
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
	return c.countSingle(err)
}

// ReadFrom reads one datagram into b. With Options.Pktinfo, dst is the
// destination address of the datagram's IP header (in_pktinfo.ipi_addr:
// the address the request was sent to; for a broadcast that is the
// broadcast address); otherwise dst is invalid.
func (c *Conn) ReadFrom(b []byte) (n int, src netip.AddrPort, dst netip.Addr, err error) {
	if !c.sys.pktinfo && !c.sys.rxqOvfl {
		n, src, err = c.uc.ReadFromUDPAddrPort(b)
		return n, readAddr(src), netip.Addr{}, err
	}
	n, oobn, _, src, err := c.uc.ReadMsgUDPAddrPort(b, c.sys.roob[:])
	if err != nil {
		return n, readAddr(src), netip.Addr{}, err
	}
	walkCmsgs(c.sys.roob[:oobn], func(level, typ int32, data []byte) {
		if a, ok := c.controlAddr(level, typ, data); ok {
			dst = a
		}
	})
	return n, readAddr(src), dst, nil
}

// controlAddr reads one received cmsg: the destination address of an
// IP_PKTINFO or IPV6_PKTINFO (ok), or SO_RXQ_OVFL's drop count (stored).
func (c *Conn) controlAddr(level, typ int32, data []byte) (dst netip.Addr, ok bool) {
	switch {
	case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
		return netip.AddrFrom4(pi.Addr), true
	case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
		pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
		// A link-local one with the interface it came in on (zone.go):
		// a transfer socket binds with it, pktinfoInto sends by it.
		return scoped(netip.AddrFrom16(pi.Addr).Unmap(), uint32(pi.Ifindex)), true
	case level == unix.SOL_SOCKET && typ == unix.SO_RXQ_OVFL && len(data) >= 4:
		// A cumulative uint32 (sock_recv_drops): one store, no sum.
		c.drops.Store(uint64(*(*uint32)(unsafe.Pointer(&data[0]))))
	}
	return netip.Addr{}, false
}
