package udpio

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestWriteMessages sends datagrams to three receivers in one call, from
// a source address set per message, and checks each receiver got exactly
// its own, in order, from that source; ReadBatch reports the address
// each was sent to (Packet.Dst). With sendmmsg 300 messages take three
// syscalls (128 a call).
func TestWriteMessages(t *testing.T) {
	for _, m := range []mode{{name: "mmsg", mmsg: true}, {name: "single"}} {
		t.Run(m.name, func(t *testing.T) {
			caps := m.caps(t)
			tx := listen(t, "0.0.0.0:0", Options{SndBuf: 4 << 20}, caps)
			var rxs []*Conn
			for i := range 3 {
				rxs = append(rxs, listen(t, fmt.Sprintf("127.0.0.%d:0", i+1), Options{RcvBuf: 1 << 20, Pktinfo: true}, caps))
			}
			src := netip.MustParseAddr("127.0.0.9")
			var ms []Message
			for i := range 300 {
				hdr := fmt.Appendf(nil, "%04d", i)
				ms = append(ms, Message{Dst: rxs[i%3].LocalAddr(), Src: src, Datagram: Datagram{Hdr: hdr, Payload: bytes.Repeat([]byte{byte(i)}, 100+i)}})
			}
			sent, calls, err := tx.WriteMessages(ms)
			if err != nil || sent != len(ms) {
				t.Fatalf("sent %d of %d: %v", sent, len(ms), err)
			}
			if want := 300; !m.mmsg && calls != want {
				t.Errorf("%d syscalls, want %d", calls, want)
			} else if m.mmsg && calls != 3 {
				t.Errorf("%d syscalls, want 3", calls)
			}
			bufs := make([][]byte, 8)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			out := make([]Packet, 8)
			for r, rx := range rxs {
				rx.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard
				for i := r; i < 300; {
					n, err := rx.ReadBatch(bufs, out)
					if err != nil {
						t.Fatalf("receiver %d at message %d: %v", r, i, err)
					}
					for _, p := range out[:n] {
						if !bytes.Equal(p.Data, joined(ms[i].Datagram)) {
							t.Fatalf("receiver %d: message %d differs", r, i)
						}
						if p.Src.Addr() != src || p.Src.Port() != tx.LocalAddr().Port() {
							t.Fatalf("message %d from %v, want %v port %d", i, p.Src, src, tx.LocalAddr().Port())
						}
						if p.Dst != rx.LocalAddr().Addr() {
							t.Fatalf("message %d: Dst %v, want %v", i, p.Dst, rx.LocalAddr().Addr())
						}
						i += 3
					}
				}
			}
		})
	}
}

// TestWriteMessagesAllocs: the multi-destination send allocates nothing
// in steady state.
func TestWriteMessagesAllocs(t *testing.T) {
	caps := mode{name: "mmsg", mmsg: true}.caps(t)
	tx := listen(t, "0.0.0.0:0", Options{SndBuf: 4 << 20}, caps)
	rx1 := listen(t, "127.0.0.1:0", Options{RcvBuf: 64 << 10}, Caps{})
	rx2 := listen(t, "127.0.0.2:0", Options{RcvBuf: 64 << 10}, Caps{})
	src := netip.MustParseAddr("127.0.0.1")
	ms := make([]Message, 64)
	for i := range ms {
		dst := rx1.LocalAddr()
		if i%2 == 1 {
			dst = rx2.LocalAddr()
		}
		ms[i] = Message{Dst: dst, Src: src, Datagram: Datagram{Hdr: []byte{0, 3, 0, byte(i)}, Payload: make([]byte, 1468)}}
	}
	f := func() {
		if _, _, err := tx.WriteMessages(ms); err != nil {
			t.Fatal(err)
		}
	}
	f()
	if a := testing.AllocsPerRun(100, f); a != 0 {
		t.Errorf("%v allocs per 64 messages, want 0", a)
	}
}
