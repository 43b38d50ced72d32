package dhcp

import (
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

// BenchmarkHandleExchange measures DISCOVER+REQUEST pairs (one exchange:
// OFFER and ACK) from a room of 500 PXE clients rebooting over and over,
// in memory and with the lease file (each ACK durable: fsync of the file
// and its directory). "parallel" runs 64 clients at once per CPU, as a
// storm does: the lease writes are shared (group commit).
func BenchmarkHandleExchange(b *testing.B) {
	const room = 500
	for _, bc := range []struct {
		name     string
		persist  bool
		parallel bool
	}{
		{"memory", false, false},
		{"persist", true, false},
		{"persist-parallel", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newServer(b, func(s *Server) {
				s.Log = zerolog.Nop()
				s.Subnets[0].Prefix = netip.MustParsePrefix("10.0.0.0/16")
				s.Subnets[0].RangeStart = netip.MustParseAddr("10.0.1.0")
				s.Subnets[0].RangeEnd = netip.MustParseAddr("10.0.255.254")
				s.Subnets[0].Router = netip.Addr{}
				if bc.persist {
					s.LeaseFile = filepath.Join(b.TempDir(), "leases.json")
				}
			})
			in := inBcast
			in.IfAddr = netip.MustParseAddr("10.0.0.1")
			discovers := make([][]byte, room)
			for i := range discovers {
				discovers[i] = build(b, dhcpv4.MessageTypeDiscover, mac(i), biosPXE()...).ToBytes()
			}
			var clock atomic.Int64
			exchange := func(i int) {
				now := t0.Add(time.Duration(clock.Add(1)) * time.Millisecond)
				d, err := dhcpv4.FromBytes(discovers[i%room])
				if err != nil {
					b.Fatal(err)
				}
				offer, err := s.Handle(d, in, now)
				if err != nil || offer == nil {
					b.Fatalf("DISCOVER: %v %v", offer, err)
				}
				r := d
				r.Options[optMessageType] = []byte{byte(dhcpv4.MessageTypeRequest)}
				r.Options[optRequestedIP] = offer.Pkt.YourIPAddr
				r.Options[optServerID] = in.IfAddr.AsSlice()
				r, err = dhcpv4.FromBytes(r.ToBytes())
				if err != nil {
					b.Fatal(err)
				}
				ack, err := s.Handle(r, in, now)
				if err != nil || ack == nil || ack.Pkt.MessageType() != dhcpv4.MessageTypeAck {
					b.Fatalf("REQUEST: %v %v", ack, err)
				}
				if len(ack.Bytes()) < 300 {
					b.Fatal("short ACK")
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			if bc.parallel {
				b.SetParallelism(64)
				var next atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						exchange(int(next.Add(1)))
					}
				})
				n = b.N
			} else {
				for b.Loop() {
					exchange(n)
					n++
				}
			}
			el := b.Elapsed().Seconds()
			b.ReportMetric(float64(n)/el, "exchanges/s")
			if bc.persist {
				b.ReportMetric(float64(s.Counters.LeaseWrites.Load())/float64(n), "fsyncs/exchange")
			}
		})
	}
}
