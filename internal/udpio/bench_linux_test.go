package udpio

import (
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// BenchmarkWriteWindow sends RFC 7440 windows of 64 full 1468-byte blocks
// over loopback to a receiver goroutine that drains with ReadBatch (UDP_GRO
// on), per send path. mmsg-xnet is the mmsg path through x/net's
// ipv4.PacketConn.WriteBatch, for comparison with the Conn's own sendmmsg.
// Metrics: datagrams per syscall, and the share and rate of bytes the
// receiver got (loopback drops what the receiver cannot keep up with).
func BenchmarkWriteWindow(b *testing.B) {
	benchModes := []struct {
		mode
		xnet bool
	}{
		{mode: mode{name: "gso", mmsg: true, gso: true}},
		{mode: mode{name: "mmsg", mmsg: true}},
		{mode: mode{name: "mmsg-xnet", mmsg: true}, xnet: true},
		{mode: mode{name: "single"}},
	}
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			caps := m.caps(b)
			rx := listen(b, "127.0.0.1:0", Options{RcvBuf: 16 << 20}, Probe())
			gro := rx.EnableGRO()
			tx := listen(b, "127.0.0.1:0", Options{SndBuf: 4 << 20}, caps)
			if m.xnet {
				tx.w = ipv4.NewPacketConn(tx.uc)
			}
			ds := window(64, blk)
			window := 0
			for _, d := range ds {
				window += d.Len()
			}

			// Allocated here, not in the goroutine, so B/op counts the sender.
			bufs := make([][]byte, 64)
			for i := range bufs {
				bufs[i] = make([]byte, 65536)
			}
			out := make([]Packet, 64*64)
			done := make(chan int)
			go func() {
				got := 0
				for {
					n, err := rx.ReadBatch(bufs, out)
					if err != nil {
						done <- got
						return
					}
					for _, p := range out[:n] {
						got += len(p.Data)
					}
				}
			}()

			b.SetBytes(int64(window))
			b.ReportAllocs()
			dst := rx.LocalAddr()
			windows := 0
			for b.Loop() {
				if _, err := tx.WriteDatagrams(dst, ds); err != nil {
					b.Fatal(err)
				}
				windows++
			}
			elapsed := b.Elapsed()
			// Let the receiver drain what is queued, then stop it.
			rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			got := <-done

			st := tx.Stats()
			if st.Datagrams != uint64(windows*len(ds)) || st.SendErrors != 0 {
				b.Fatalf("sent %d datagrams of %d windows: %+v", st.Datagrams, windows, st)
			}
			sent := windows * window
			b.ReportMetric(float64(st.Datagrams)/float64(st.Syscalls), "dgrams/syscall")
			b.ReportMetric(100*float64(got)/float64(sent), "%rx")
			b.ReportMetric(float64(got)/1e6/elapsed.Seconds(), "rxMB/s")
			if !gro {
				b.Logf("receiver without UDP_GRO")
			}
		})
	}
}
