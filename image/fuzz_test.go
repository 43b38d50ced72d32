package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzParseHeaderIndex: ReadIndex on arbitrary bytes never panics, fails
// only with *FormatError, and whatever it accepts marshals back to the same
// index and an equal header.
func FuzzParseHeaderIndex(f *testing.F) {
	_, good, ix := smallImage(f)
	prefix := good[:ix.PrefixLen()]
	f.Add(prefix)
	f.Add(prefix[:HeaderSize])
	f.Add(prefix[:HeaderSize+10])
	f.Add([]byte("MTFTPIMG"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := ReadIndex(bytes.NewReader(b))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		if int64(len(b)) < ix.PrefixLen() {
			t.Fatalf("accepted %d bytes, prefix is %d", len(b), ix.PrefixLen())
		}
		var idx []byte
		for _, e := range ix.Entries {
			idx = appendEntry(idx, e)
		}
		if !bytes.Equal(idx, b[HeaderSize:HeaderSize+int(ix.Header.IndexLen)]) {
			t.Fatal("index does not marshal back to its bytes")
		}
		h := ix.Header
		hb, err := marshalHeader(&h)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := ParseHeader(hb)
		if err != nil {
			t.Fatalf("re-marshalled header does not parse: %v", err)
		}
		if !h2.Meta.Created.Equal(h.Meta.Created) {
			t.Fatal("created time changed")
		}
		h2.Meta.Created = h.Meta.Created
		if h2 != h {
			t.Fatalf("header round trip: %+v != %+v", h2, h)
		}
	})
}

// FuzzReceiveStream: arbitrary bytes into ReceiveStream with a small size
// limit never panic, and an accepted image is within the limit and
// verifies.
func FuzzReceiveStream(f *testing.F) {
	cs := uint32(MinChunkSize)
	raw := bytes.Repeat([]byte("0123456789abcdef"), MinChunkSize/16)
	d := sha256.Sum256(raw)
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(raw, nil)
	zd := ZeroDigest(MinChunkSize)
	three := ImageDigest(func(i int) [32]byte { return [][32]byte{d, zd, d}[i] }, 3)
	f.Add(newStream(cs, 3*uint64(cs)).data(KindZstd, z, d).hole().dup(0).end(three).b)
	f.Add(newStream(cs, 3*uint64(cs)).data(KindZstd, z, d).b)
	f.Add(newStream(cs, 100).data(KindRaw, raw[:100], sha256.Sum256(raw[:100])).b)
	f.Add([]byte(streamMagic))
	const maxSize = 1 << 20
	path := filepath.Join(f.TempDir(), "fuzz.img")
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		ix, err := ReceiveStream(bytes.NewReader(b), out, maxSize)
		if err != nil {
			if fi, _ := out.Stat(); fi.Size() > maxSize {
				t.Fatalf("a refused stream left %d bytes (limit %d)", fi.Size(), maxSize)
			}
			return
		}
		if ix.FileSize() > maxSize {
			t.Fatalf("accepted an image of %d bytes (limit %d)", ix.FileSize(), maxSize)
		}
		if _, _, err := Open(path); err != nil {
			t.Fatalf("accepted stream makes a bad image: %v", err)
		}
	})
}

// nbdServer builds the server side of an NBD exchange for tests.
type nbdServer struct{ b []byte }

func newNBDServer(flags uint16) *nbdServer {
	s := &nbdServer{}
	s.b = binary.BigEndian.AppendUint64(s.b, nbdMagic)
	s.b = binary.BigEndian.AppendUint64(s.b, nbdOptMagic)
	s.b = binary.BigEndian.AppendUint16(s.b, flags)
	return s
}

func (s *nbdServer) optReply(typ uint32, payload []byte) *nbdServer {
	s.b = binary.BigEndian.AppendUint64(s.b, nbdRepMagic)
	s.b = binary.BigEndian.AppendUint32(s.b, nbdOptGo)
	s.b = binary.BigEndian.AppendUint32(s.b, typ)
	s.b = binary.BigEndian.AppendUint32(s.b, uint32(len(payload)))
	s.b = append(s.b, payload...)
	return s
}

func (s *nbdServer) export(size uint64) *nbdServer {
	p := binary.BigEndian.AppendUint16(nil, nbdInfoExport)
	p = binary.BigEndian.AppendUint64(p, size)
	p = binary.BigEndian.AppendUint16(p, 1)
	return s.optReply(nbdRepInfo, p)
}

func (s *nbdServer) reply(errno uint32, handle uint64, data []byte) *nbdServer {
	s.b = binary.BigEndian.AppendUint32(s.b, nbdSimpleReplyMagic)
	s.b = binary.BigEndian.AppendUint32(s.b, errno)
	s.b = binary.BigEndian.AppendUint64(s.b, handle)
	s.b = append(s.b, data...)
	return s
}

type scripted struct {
	io.Reader
	sent bytes.Buffer
}

func (s *scripted) Write(p []byte) (int, error) { return s.sent.Write(p) }

func TestNBDClient(t *testing.T) {
	data := []byte("hello, block device")
	blockSize := binary.BigEndian.AppendUint16(nil, nbdInfoBlockSize)
	blockSize = binary.BigEndian.AppendUint32(blockSize, 1)
	blockSize = binary.BigEndian.AppendUint32(blockSize, 4096)
	blockSize = binary.BigEndian.AppendUint32(blockSize, 8) // max payload 8: reads split
	srv := newNBDServer(nbdFlagFixedNewstyle|nbdFlagNoZeroes).
		optReply(nbdRepInfo, []byte{0, 9, 'x'}). // an information type we do not know: ignored
		optReply(nbdRepInfo, blockSize).
		export(4096).optReply(nbdRepAck, nil).
		reply(0, 1, data[:8]).reply(0, 2, data[8:16]).reply(0, 3, data[16:])
	rw := &scripted{Reader: bytes.NewReader(srv.b)}
	c, err := nbdHandshake(rw)
	if err != nil {
		t.Fatal(err)
	}
	if c.size != 4096 || c.maxReq != 8 {
		t.Fatalf("size %d, max request %d", c.size, c.maxReq)
	}
	got := make([]byte, len(data))
	if _, err := c.ReadAt(got, 100); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt: %q, %v", got, err)
	}
	// The client sent its flags, one NBD_OPT_GO and three read requests.
	sent := rw.sent.Bytes()
	if len(sent) != 4+16+8+3*28 || binary.BigEndian.Uint32(sent[12:]) != nbdOptGo {
		t.Fatalf("client sent %d bytes: %x", len(sent), sent)
	}
	if off := binary.BigEndian.Uint64(sent[28+2*28+16:]); off != 116 {
		t.Fatalf("third request at offset %d, want 116", off)
	}
	if _, err := c.ReadAt(got, 4090); err == nil {
		t.Fatal("read past the export accepted")
	}

	ok := func() *nbdServer { return newNBDServer(nbdFlagFixedNewstyle).export(4096).optReply(nbdRepAck, nil) }
	for _, tc := range []struct {
		name string
		srv  []byte
		want string
	}{
		{"not nbd", []byte("SSH-2.0-OpenSSH_9.2 and more bytes"), "not fixed newstyle"},
		{"old newstyle", newNBDServer(0).b, "does not offer fixed newstyle"},
		{"refused", newNBDServer(1).optReply(nbdRepErrBit|6, []byte("no such export")).b, `error 0x80000006 "no such export"`},
		{"huge option reply", newNBDServer(1).optReply(nbdRepInfo, make([]byte, nbdMaxOptReply+1)).b, "option reply of 8193 bytes"},
		{"ack without export", newNBDServer(1).optReply(nbdRepAck, nil).b, "without NBD_INFO_EXPORT"},
		{"short export info", newNBDServer(1).optReply(nbdRepInfo, []byte{0, 0, 1}).b, "NBD_INFO_EXPORT of 3 bytes"},
		{"server error", ok().reply(5, 1, nil).b, "server error 5"},
		{"wrong handle", ok().reply(0, 7, data[:8]).b, "reply handle 7, the request's was 1"},
		{"structured reply", ok().b, "reading the reply"},
		{"short data", ok().reply(0, 1, data[:3]).b, "reading 8 bytes at 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := nbdHandshake(&scripted{Reader: bytes.NewReader(tc.srv)})
			if err == nil {
				_, err = c.ReadAt(make([]byte, 8), 0)
			}
			if err == nil || !errors.Is(err, errNBD) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// More than nbdMaxReplies information replies.
	s := newNBDServer(1)
	for range nbdMaxReplies + 1 {
		s.optReply(nbdRepInfo, []byte{0, 9})
	}
	if _, err := nbdHandshake(&scripted{Reader: bytes.NewReader(s.b)}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("more than 64 replies")) {
		t.Fatalf("endless replies: %v", err)
	}
}

// FuzzNBDReply: arbitrary server bytes through the handshake and a few
// reads never panic, and a read either fills its buffer or fails.
func FuzzNBDReply(f *testing.F) {
	ok := newNBDServer(3).export(1<<20).optReply(nbdRepAck, nil)
	f.Add(bytes.Clone(ok.reply(0, 1, []byte("12345678")).b))
	f.Add(newNBDServer(1).optReply(nbdRepErrBit|1, []byte("unsupported")).b)
	f.Add(newNBDServer(1).export(8).optReply(nbdRepAck, nil).reply(5, 1, nil).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		c, err := nbdHandshake(&scripted{Reader: r})
		if err != nil {
			return
		}
		buf := make([]byte, 8)
		for off := range int64(4) {
			n, err := c.ReadAt(buf, off*8)
			if err != nil {
				return
			}
			if n != len(buf) {
				t.Fatalf("ReadAt returned %d of %d bytes without an error", n, len(buf))
			}
		}
	})
}
