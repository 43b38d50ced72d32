package tftp

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
)

// TestLoopBlindWindowAmplification: in single-port mode the server's
// port is 69, so a spoofer who never sees a reply can still send the
// ACKs a windowed read expects (ACK 0 after the OACK, then the last
// block of each window). It forges a windowed RRQ from a victim's
// address and follows it with blind ACKs: no DATA may reach the victim
// (a windowed transfer keeps a port of its own, which only the real
// client learns). Before, each 4-byte forged ACK bought a 64-block
// window, 94 KB, for the victim.
func TestLoopBlindWindowAmplification(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "big"), testData(4<<20, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := filestore.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(1)
		victim := netip.MustParseAddrPort("198.51.100.7:2070")
		n.Bind(victim) // a host that never answers
		var dataBytes, spoofed atomic.Int64
		n.Drop = func(from, to netip.AddrPort, pkt []byte) bool {
			if to == victim && PacketOpcode(pkt) == OpDATA {
				dataBytes.Add(int64(len(pkt)))
			}
			return false
		}
		srv := &Server{Files: store, SinglePort: true, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}
		addr, stop := startLoop(t, n, srv)
		spoof := func(b []byte) {
			spoofed.Add(int64(len(b)))
			n.Spoof(victim, addr, b)
			time.Sleep(5 * time.Millisecond)
		}
		spoof((&Request{Op: OpRRQ, Filename: "big", Mode: "octet",
			Options: []Option{{Name: "blksize", Value: "1468"}, {Name: "windowsize", Value: "64"}}}).Marshal(nil))
		spoof(AppendAck(nil, 0))
		for w := uint16(1); w <= 20; w++ {
			spoof(AppendAck(nil, w*64))
		}
		time.Sleep(time.Minute) // every retry of what was sent
		if got := dataBytes.Load(); got > 0 {
			t.Errorf("%d spoofed bytes made the server send %d bytes of DATA to a host that never asked", spoofed.Load(), got)
		}
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}
