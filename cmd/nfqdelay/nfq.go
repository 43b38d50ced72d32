//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The nfnetlink_queue protocol, written from the kernel's UAPI headers
// include/uapi/linux/netfilter/nfnetlink.h and nfnetlink_queue.h. Only what
// a metadata-only delayer needs: bind a queue, read packet ids, send
// NF_ACCEPT verdicts, unbind. Netlink headers are in host byte order, the
// nfnetlink payloads (res_id, packet id, verdict, config values) big endian.

// nfnetlink_queue message types (enum nfqnl_msg_types), sent as
// NFNL_SUBSYS_QUEUE<<8 | type.
const (
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2
)

// Packet attributes (enum nfqnl_attr_type).
const (
	nfqaPacketHdr  = 1 // struct nfqnl_msg_packet_hdr { be32 packet_id; be16 hw_protocol; u8 hook; } packed
	nfqaVerdictHdr = 2 // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }
)

// Config attributes (enum nfqnl_attr_config) and their values.
const (
	nfqaCfgCmd         = 1 // struct nfqnl_msg_config_cmd { u8 command; u8 _pad; be16 pf; }
	nfqaCfgParams      = 2 // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } packed
	nfqaCfgQueueMaxlen = 3 // be32
	nfqaCfgMask        = 4 // be32
	nfqaCfgFlags       = 5 // be32

	nfqnlCfgCmdBind   = 1
	nfqnlCfgCmdUnbind = 2

	nfqnlCopyMeta = 1

	// NFQA_CFG_F_FAIL_OPEN: when the queue is full or the message cannot
	// be delivered to us, the kernel accepts the packet instead of
	// dropping it. A delay tool must not add loss of its own.
	nfqaCfgFFailOpen = 1 << 0

	nfAccept = 1 // NF_ACCEPT
)

const (
	nlmsgHdrLen  = 16 // struct nlmsghdr
	nfgenMsgLen  = 4  // struct nfgenmsg { u8 nfgen_family; u8 version; be16 res_id; }
	nlaHdrLen    = 4  // struct nlattr { u16 nla_len; u16 nla_type; }
	nlaTypeMask  = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	packetMsgTyp = unix.NFNL_SUBSYS_QUEUE<<8 | nfqnlMsgPacket
)

var ne = binary.NativeEndian

func align4(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

// nfMsg builds one nfnetlink message of the queue subsystem.
type nfMsg struct{ b []byte }

func newNfMsg(msgType uint16, flags uint16, seq uint32, family uint8, queue uint16) *nfMsg {
	b := make([]byte, nlmsgHdrLen+nfgenMsgLen, 64)
	ne.PutUint16(b[4:], unix.NFNL_SUBSYS_QUEUE<<8|msgType)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	// nlmsg_pid 0: addressed to the kernel.
	b[16] = family
	b[17] = unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:], queue)
	return &nfMsg{b: b}
}

func (m *nfMsg) attr(typ uint16, data []byte) *nfMsg {
	var h [nlaHdrLen]byte
	ne.PutUint16(h[0:], uint16(nlaHdrLen+len(data)))
	ne.PutUint16(h[2:], typ)
	m.b = append(m.b, h[:]...)
	m.b = append(m.b, data...)
	for len(m.b)%unix.NLA_ALIGNTO != 0 {
		m.b = append(m.b, 0)
	}
	return m
}

func (m *nfMsg) bytes() []byte {
	ne.PutUint32(m.b[0:], uint32(len(m.b)))
	return m.b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// bindMsg binds queue for AF_INET with metadata-only copies (the kernel
// keeps the packet; we get its id), a queue of maxlen packets and fail-open.
func bindMsg(seq uint32, queue uint16, maxlen uint32) []byte {
	params := append(be32(0), nfqnlCopyMeta) // copy_range 0, copy_mode META
	return newNfMsg(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, unix.AF_UNSPEC, queue).
		attr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, unix.AF_INET}).
		attr(nfqaCfgParams, params).
		attr(nfqaCfgQueueMaxlen, be32(maxlen)).
		attr(nfqaCfgFlags, be32(nfqaCfgFFailOpen)).
		attr(nfqaCfgMask, be32(nfqaCfgFFailOpen)).
		bytes()
}

func unbindMsg(seq uint32, queue uint16) []byte {
	return newNfMsg(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, unix.AF_UNSPEC, queue).
		attr(nfqaCfgCmd, []byte{nfqnlCfgCmdUnbind, 0, 0, unix.AF_INET}).
		bytes()
}

// verdictMsg accepts packet id. No NLM_F_ACK: the kernel reports only
// failures, as NLMSG_ERROR messages that the reader counts.
func verdictMsg(seq uint32, queue uint16, id uint32) []byte {
	var v [8]byte
	binary.BigEndian.PutUint32(v[0:], nfAccept)
	binary.BigEndian.PutUint32(v[4:], id)
	return newNfMsg(nfqnlMsgVerdict, unix.NLM_F_REQUEST, seq, unix.AF_UNSPEC, queue).
		attr(nfqaVerdictHdr, v[:]).
		bytes()
}

// nlMsg is one received netlink message; data follows the nlmsghdr.
type nlMsg struct {
	typ   uint16
	flags uint16
	seq   uint32
	data  []byte
}

// splitMessages splits a received datagram into its netlink messages.
func splitMessages(b []byte) ([]nlMsg, error) {
	var msgs []nlMsg
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return msgs, fmt.Errorf("netlink: bad message length %d of %d bytes", l, len(b))
		}
		msgs = append(msgs, nlMsg{
			typ:   ne.Uint16(b[4:]),
			flags: ne.Uint16(b[6:]),
			seq:   ne.Uint32(b[8:]),
			data:  b[nlmsgHdrLen:l],
		})
		if align4(l) >= len(b) {
			break
		}
		b = b[align4(l):]
	}
	return msgs, nil
}

// packetID returns the packet id of an NFQNL_MSG_PACKET message's data.
func packetID(data []byte) (uint32, error) {
	if len(data) < nfgenMsgLen {
		return 0, errors.New("nfqueue: packet message without nfgenmsg")
	}
	b := data[nfgenMsgLen:]
	for len(b) >= nlaHdrLen {
		l := int(ne.Uint16(b[0:]))
		typ := ne.Uint16(b[2:]) & nlaTypeMask
		if l < nlaHdrLen || l > len(b) {
			return 0, fmt.Errorf("nfqueue: bad attribute length %d", l)
		}
		if typ == nfqaPacketHdr {
			if l < nlaHdrLen+4 {
				return 0, errors.New("nfqueue: short NFQA_PACKET_HDR")
			}
			return binary.BigEndian.Uint32(b[nlaHdrLen:]), nil
		}
		if align4(l) >= len(b) {
			break
		}
		b = b[align4(l):]
	}
	return 0, errors.New("nfqueue: packet message without NFQA_PACKET_HDR")
}

// nlErrno returns the error code of an NLMSG_ERROR message (0 is an ack)
// and the sequence number of the request it answers.
func nlErrno(data []byte) (errno unix.Errno, seq uint32, err error) {
	if len(data) < 4+nlmsgHdrLen {
		return 0, 0, errors.New("netlink: short NLMSG_ERROR")
	}
	code := int32(ne.Uint32(data[0:]))
	return unix.Errno(-code), ne.Uint32(data[4+8:]), nil
}

// queueConn is a NETLINK_NETFILTER socket bound to one queue. send is safe
// for concurrent use: every write to the socket goes through wmu.
type queueConn struct {
	fd    int
	queue uint16

	wmu sync.Mutex
	seq uint32
}

// rcvTimeout bounds each blocking recv so that the reader notices a stop.
const rcvTimeout = 100 * time.Millisecond

func openQueue(queue uint16, maxlen uint32) (*queueConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	c := &queueConn{fd: fd, queue: queue}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Room for many queued-packet messages; FORCE needs CAP_NET_ADMIN,
	// which binding a queue needs anyway. ENOBUFS is still handled.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	tv := unix.NsecToTimeval(rcvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	seq := c.nextSeq()
	if err := c.request(bindMsg(seq, queue, maxlen), seq, nil); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("bind queue %d: %w (another program holds it)", queue, err)
		}
		return nil, fmt.Errorf("bind queue %d: %w", queue, err)
	}
	return c, nil
}

func (c *queueConn) nextSeq() uint32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.seq++
	return c.seq
}

func (c *queueConn) send(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// accept sends an NF_ACCEPT verdict for packet id.
func (c *queueConn) accept(id uint32) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.seq++
	return unix.Sendto(c.fd, verdictMsg(c.seq, c.queue, id), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// request sends a config message and waits (bounded) for its ack. Packet
// messages that arrive meanwhile go to onPacket (nil: none expected).
// Only for use while no reader goroutine runs.
func (c *queueConn) request(msg []byte, seq uint32, onPacket func(id uint32)) error {
	if err := c.send(msg); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return err
		}
		msgs, err := splitMessages(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.typ {
			case unix.NLMSG_ERROR:
				errno, s, err := nlErrno(m.data)
				if err != nil {
					return err
				}
				if s != seq {
					continue // a late verdict error
				}
				if errno != 0 {
					return errno
				}
				return nil
			case packetMsgTyp:
				if id, err := packetID(m.data); err == nil && onPacket != nil {
					onPacket(id)
				}
			}
		}
	}
	return errors.New("no netlink ack within 3 s")
}

// unbind releases the queue; packets that reach us meanwhile are accepted.
func (c *queueConn) unbind(onPacket func(id uint32)) error {
	seq := c.nextSeq()
	return c.request(unbindMsg(seq, c.queue), seq, onPacket)
}

func (c *queueConn) close() error { return unix.Close(c.fd) }
