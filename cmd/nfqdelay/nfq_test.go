//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBindMsg(t *testing.T) {
	b := bindMsg(7, 300, 65536)
	if got := int(ne.Uint32(b[0:])); got != len(b) {
		t.Fatalf("nlmsg_len %d, message %d bytes", got, len(b))
	}
	if typ := ne.Uint16(b[4:]); typ != unix.NFNL_SUBSYS_QUEUE<<8|nfqnlMsgConfig {
		t.Errorf("type %#x", typ)
	}
	if f := ne.Uint16(b[6:]); f != unix.NLM_F_REQUEST|unix.NLM_F_ACK {
		t.Errorf("flags %#x", f)
	}
	if seq := ne.Uint32(b[8:]); seq != 7 {
		t.Errorf("seq %d", seq)
	}
	if q := binary.BigEndian.Uint16(b[18:]); q != 300 {
		t.Errorf("res_id %d, want 300 (big endian)", q)
	}
	attrs := parseAttrs(t, b[nlmsgHdrLen+nfgenMsgLen:])
	want := map[uint16][]byte{
		nfqaCfgCmd:         {nfqnlCfgCmdBind, 0, 0, unix.AF_INET},
		nfqaCfgParams:      {0, 0, 0, 0, nfqnlCopyMeta},
		nfqaCfgQueueMaxlen: {0, 1, 0, 0},
		nfqaCfgFlags:       {0, 0, 0, 1},
		nfqaCfgMask:        {0, 0, 0, 1},
	}
	for typ, w := range want {
		if !bytes.Equal(attrs[typ], w) {
			t.Errorf("attr %d = %v, want %v", typ, attrs[typ], w)
		}
	}
	if len(attrs) != len(want) {
		t.Errorf("%d attributes, want %d", len(attrs), len(want))
	}
}

func TestVerdictMsg(t *testing.T) {
	b := verdictMsg(1, 5, 0xdeadbeef)
	if typ := ne.Uint16(b[4:]); typ != unix.NFNL_SUBSYS_QUEUE<<8|nfqnlMsgVerdict {
		t.Errorf("type %#x", typ)
	}
	if f := ne.Uint16(b[6:]); f != unix.NLM_F_REQUEST {
		t.Errorf("flags %#x, want request without ack", f)
	}
	attrs := parseAttrs(t, b[nlmsgHdrLen+nfgenMsgLen:])
	if w := []byte{0, 0, 0, nfAccept, 0xde, 0xad, 0xbe, 0xef}; !bytes.Equal(attrs[nfqaVerdictHdr], w) {
		t.Errorf("verdict hdr %v, want %v", attrs[nfqaVerdictHdr], w)
	}
	u := unbindMsg(2, 5)
	if a := parseAttrs(t, u[nlmsgHdrLen+nfgenMsgLen:]); !bytes.Equal(a[nfqaCfgCmd], []byte{nfqnlCfgCmdUnbind, 0, 0, unix.AF_INET}) {
		t.Errorf("unbind cmd %v", a[nfqaCfgCmd])
	}
}

func parseAttrs(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	m := map[uint16][]byte{}
	for len(b) > 0 {
		if len(b) < nlaHdrLen {
			t.Fatalf("%d trailing bytes", len(b))
		}
		l := int(ne.Uint16(b[0:]))
		if l < nlaHdrLen || align4(l) > len(b) {
			t.Fatalf("attribute length %d of %d bytes", l, len(b))
		}
		m[ne.Uint16(b[2:])] = b[nlaHdrLen:l]
		b = b[align4(l):]
	}
	return m
}

// kernelPacketMsg builds what the kernel sends for a queued packet in
// copy-meta mode, with the id not in the first attribute and the 7-byte
// packet header padded.
func kernelPacketMsg(id uint32) []byte {
	var hdr [7]byte
	binary.BigEndian.PutUint32(hdr[0:], id)
	binary.BigEndian.PutUint16(hdr[4:], 0x0800)
	hdr[6] = 3 // NF_INET_LOCAL_OUT
	return newNfMsg(nfqnlMsgPacket, 0, 0, unix.AF_INET, 100).
		attr(3 /* NFQA_MARK */, be32(0)).
		attr(nfqaPacketHdr|unix.NLA_F_NET_BYTEORDER, hdr[:]).
		attr(5 /* NFQA_IFINDEX_INDEV */, be32(2)).
		bytes()
}

func TestParsePackets(t *testing.T) {
	buf := append(kernelPacketMsg(41), kernelPacketMsg(0xfffffffe)...)
	msgs, err := splitMessages(buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for i, want := range []uint32{41, 0xfffffffe} {
		if msgs[i].typ != packetMsgTyp {
			t.Errorf("message %d: type %#x", i, msgs[i].typ)
		}
		id, err := packetID(msgs[i].data)
		if err != nil || id != want {
			t.Errorf("message %d: id %d, %v; want %d", i, id, err, want)
		}
	}
	if _, err := splitMessages(buf[:len(buf)-3]); err == nil {
		t.Error("truncated datagram: no error")
	}
	noHdr := newNfMsg(nfqnlMsgPacket, 0, 0, unix.AF_INET, 100).attr(5, be32(2)).bytes()
	if _, err := packetID(noHdr[nlmsgHdrLen:]); err == nil {
		t.Error("message without NFQA_PACKET_HDR: no error")
	}
}

func TestNlErrno(t *testing.T) {
	req := bindMsg(99, 1, 1)
	for _, errno := range []unix.Errno{0, unix.EBUSY} {
		data := ne.AppendUint32(nil, uint32(-int32(errno)))
		data = append(data, req[:nlmsgHdrLen]...)
		got, seq, err := nlErrno(data)
		if err != nil || got != errno || seq != 99 {
			t.Errorf("errno %v: got %v seq %d err %v", errno, got, seq, err)
		}
	}
	if _, _, err := nlErrno([]byte{0, 0}); err == nil {
		t.Error("short NLMSG_ERROR: no error")
	}
}
