//go:build !linux

package udpio

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// dontWait: WriteMessages' send flag; without MSG_DONTWAIT here a send
// may wait for room in the send buffer.
const dontWait = 0

// connSys is the fallback part of a Conn: no sendmmsg, GSO or IP_PKTINFO,
// one datagram per syscall, so the package builds and works everywhere.
type connSys struct {
	inet6 bool
}

func (c *Conn) setup(o Options) error {
	c.caps.MMsg, c.caps.GSO = false, false
	if ua, ok := c.uc.LocalAddr().(*net.UDPAddr); ok {
		c.sys.inet6 = ua.IP.To4() == nil
	}
	if o.SndBuf > 0 {
		if err := c.uc.SetWriteBuffer(o.SndBuf); err != nil {
			return fmt.Errorf("udpio: sndbuf %s: %w", sizeString(o.SndBuf), err)
		}
	}
	if o.RcvBuf > 0 {
		if err := c.uc.SetReadBuffer(o.RcvBuf); err != nil {
			return fmt.Errorf("udpio: rcvbuf %s: %w", sizeString(o.RcvBuf), err)
		}
	}
	// The sizes cannot be read back portably; report what was asked.
	c.sndGot, c.rcvGot = o.SndBuf, o.RcvBuf
	c.w = &copyWriter{uc: c.uc}
	return nil
}

func probeKernel() Caps { return Caps{GSOMaxSegments: gsoMaxSegments} }

func isGSOError(error) bool { return false }

func gsoControl([]byte, int) []byte { return nil }

// pktinfoInto: setting the source address is not supported here.
func (c *Conn) pktinfoInto([]byte, netip.Addr) []byte { return nil }

// copyWriter sends the first message per call with WriteToUDP, copying its
// buffers into one (net.UDPConn has no writev).
type copyWriter struct {
	uc  *net.UDPConn
	buf [65536]byte
}

func (w *copyWriter) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	n := 0
	for _, b := range ms[0].Buffers {
		n += copy(w.buf[n:], b)
	}
	ua, _ := ms[0].Addr.(*net.UDPAddr)
	if _, err := w.uc.WriteToUDP(w.buf[:n], ua); err != nil {
		return 0, err
	}
	return 1, nil
}

// WriteTo sends one datagram b to dst. Setting the source address is not
// supported here; src is ignored (ReadFrom never reports one).
func (c *Conn) WriteTo(b []byte, dst netip.AddrPort, src netip.Addr) error {
	_, err := c.uc.WriteToUDPAddrPort(b, dst)
	return c.countSingle(err)
}

// ReadFrom reads one datagram into b; dst is always invalid here.
func (c *Conn) ReadFrom(b []byte) (n int, src netip.AddrPort, dst netip.Addr, err error) {
	n, src, err = c.uc.ReadFromUDPAddrPort(b)
	return n, readAddr(src), netip.Addr{}, err
}

// EnableGRO reports false: UDP_GRO is Linux-only.
func (c *Conn) EnableGRO() bool { return false }

// ReadBatch reads one datagram into bufs[0] and returns it as out[0].
func (c *Conn) ReadBatch(bufs [][]byte, out []Packet) (int, error) {
	if len(out) == 0 || len(bufs) == 0 {
		return 0, nil
	}
	n, src, _, err := c.ReadFrom(bufs[0])
	if err != nil {
		return 0, err
	}
	out[0] = Packet{Data: bufs[0][:n], Src: src}
	return 1, nil
}
