package udpio

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// Message is one datagram with its own destination, for WriteMessages.
type Message struct {
	Dst netip.AddrPort
	// Src, if valid, is the source address (IP_PKTINFO, Linux): a
	// listener on a wildcard address answers each peer from the address
	// its request came to. Invalid: the socket's own.
	Src netip.Addr
	Datagram
}

// pktinfoSlot is the control room of one message's IP_PKTINFO cmsg:
// CMSG_SPACE(sizeof(struct in6_pktinfo)) = 40 bytes on 64-bit Linux.
const pktinfoSlot = 40

// multiState is WriteMessages' reusable send state, made at its first call
// so Conns that never use it do not carry it.
type multiState struct {
	addrs [maxBatch]net.UDPAddr
	ips   [maxBatch][16]byte
	oob   [maxBatch][pktinfoSlot]byte
}

// WriteMessages sends ms, each datagram to its own destination, in as
// few syscalls as the caps allow: one sendmmsg per 128 messages (a
// single-port server's lock-step blocks for many clients in one call),
// else one sendmsg per message. No GSO: consecutive datagrams rarely
// share a destination here. It returns how many messages, from the
// first, were sent, and the syscalls made; when sent < len(ms), err is
// the error of ms[sent], which was not sent (the caller may skip it and
// call again with the rest). It never waits for room in the send buffer
// (MSG_DONTWAIT on Linux): a full buffer is EAGAIN for the message it
// reached, so an event loop never stalls on the kernel, whose buffer
// answers to addresses that never resolve (forged sources waiting for
// ARP or neighbour discovery) can fill (docs/security.md, "TFTP").
// Header and payload go as two iovecs, never
// copied; like WriteDatagrams it does not allocate in steady state and
// one goroutine at a time may call it.
func (c *Conn) WriteMessages(ms []Message) (sent, syscalls int, err error) {
	if c.multi == nil {
		c.multi = new(multiState)
	}
	for sent < len(ms) {
		chunk := ms[sent:min(len(ms), sent+maxBatch)]
		msgs := c.buildMulti(chunk)
		n, werr := c.w.WriteBatch(msgs, dontWait)
		syscalls++
		c.st.syscalls.Add(1)
		if c.caps.MMsg {
			c.st.mmsgBatches.Add(1)
		} else {
			c.st.singles.Add(1)
		}
		clear(c.iov[:2*len(chunk)])
		n = max(0, min(n, len(msgs)))
		c.st.datagrams.Add(uint64(n))
		sent += n
		if werr != nil {
			c.st.sendErrors.Add(1)
			return sent, syscalls, &net.OpError{Op: "write", Net: "udp", Source: net.UDPAddrFromAddrPort(c.laddr),
				Addr: net.UDPAddrFromAddrPort(ms[sent].Dst), Err: werr}
		}
		if n == 0 {
			return sent, syscalls, errNoProgress
		}
	}
	return sent, syscalls, nil
}

// buildMulti fills the Conn's message arrays for ms (at most maxBatch).
func (c *Conn) buildMulti(ms []Message) []ipv4.Message {
	st := c.multi
	for i := range ms {
		m := &ms[i]
		c.iov[2*i], c.iov[2*i+1] = m.Hdr, m.Payload
		c.putAddr(&st.addrs[i], &st.ips[i], m.Dst)
		out := &c.msgs[i]
		out.Buffers = c.iov[2*i : 2*i+2]
		out.Addr = &st.addrs[i]
		out.OOB = nil
		if m.Src.IsValid() {
			out.OOB = c.pktinfoInto(st.oob[i][:], m.Src)
		}
		out.N, out.NN, out.Flags = 0, 0, 0
	}
	return c.msgs[:len(ms)]
}
