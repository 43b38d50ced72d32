package udpio

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestConcurrentWrites: WriteTo with and without a source address may run
// on several goroutines while another runs WriteDatagrams (mtftp's native
// sessions answer joins while their stream goroutine sends); under -race
// this fails if they share unguarded Conn state. Every datagram arrives
// intact.
func TestConcurrentWrites(t *testing.T) {
	rx := listen(t, "127.0.0.1:0", Options{RcvBuf: 4 << 20}, Probe())
	tx := listen(t, "0.0.0.0:0", Options{SndBuf: 4 << 20, Pktinfo: true}, Probe())
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), rx.LocalAddr().Port())
	const rounds, windows = 50, 4
	lo := netip.MustParseAddr("127.0.0.1")
	srcs := []netip.Addr{{}, lo, lo}
	var wg sync.WaitGroup
	wg.Add(1 + len(srcs))
	go func() {
		defer wg.Done()
		ds := window(8, 100)
		for range windows {
			if _, err := tx.WriteDatagrams(dst, ds); err != nil {
				t.Error(err)
			}
		}
	}()
	for _, src := range srcs {
		go func() {
			defer wg.Done()
			for range rounds {
				if err := tx.WriteTo([]byte("control"), dst, src); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	want := len(srcs)*rounds + windows*8
	got := 0
	buf := make([]byte, 2048)
	rx.SetReadDeadline(time.Now().Add(2 * time.Second))
	for got < want {
		if _, _, _, err := rx.ReadFrom(buf); err != nil {
			break
		}
		got++
	}
	if got != want {
		t.Errorf("received %d datagrams, want %d", got, want)
	}
	if st := tx.Stats(); st.Datagrams != uint64(want) || st.SendErrors != 0 {
		t.Errorf("stats %+v, want %d datagrams and no errors", st, want)
	}
}

// BenchmarkWriteToPktinfo: one control datagram with a source address, the
// path whose cmsg buffer WriteTo guards with a mutex.
func BenchmarkWriteToPktinfo(b *testing.B) {
	rx := listen(b, "127.0.0.1:0", Options{RcvBuf: 16 << 20}, Probe())
	tx := listen(b, "0.0.0.0:0", Options{Pktinfo: true}, Probe())
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), rx.LocalAddr().Port())
	src := netip.MustParseAddr("127.0.0.1")
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, _, err := rx.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if err := tx.WriteTo(msg, dst, src); err != nil {
			b.Fatal(err)
		}
	}
}
