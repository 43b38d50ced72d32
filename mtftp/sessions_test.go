package mtftp

import (
	"context"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mtftpd/mtftpd/internal/testutil/memnet"
	"github.com/mtftpd/mtftpd/tftp"
)

// TestSessionsSnapshot samples Sessions while two clients share a stream
// and after they are done.
func TestSessionsSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(3)
		data := testData(300_000, 3)
		s := newTestServer(t, n, map[string][]byte{"f": data})
		cs := []*client{{ip: "192.0.2.101", blksize: 1428}, {ip: "192.0.2.102", blksize: 1428}}
		done := make(chan struct{}, len(cs))
		for i, c := range cs {
			go func() {
				time.Sleep(time.Duration(i) * 50 * time.Millisecond)
				c.run(context.Background(), n, s, "f")
				done <- struct{}{}
			}()
		}
		// 1 ms each way: ~50 blocks in by now, of 211.
		time.Sleep(100 * time.Millisecond)
		ss := s.Sessions()
		if len(ss) != 1 {
			t.Fatalf("%d sessions, want 1: %+v", len(ss), ss)
		}
		x := ss[0]
		if x.Dialect != "rfc2090" || x.File != "f" || x.BlockSize != 1428 || x.Size != 300_000 || x.Blocks != 211 || !x.Group.IsValid() {
			t.Errorf("session %+v", x)
		}
		if x.Position < 10 || x.Position >= x.Blocks || x.Sent < uint64(x.Position) {
			t.Errorf("session at block %d of %d with %d sent: not mid-stream", x.Position, x.Blocks, x.Sent)
		}
		if len(x.Receivers) != 2 || !x.Receivers[0].Master || x.Receivers[1].Master ||
			x.Receivers[0].Addr.Addr().String() != "192.0.2.101" || x.Receivers[1].Addr.Addr().String() != "192.0.2.102" {
			t.Errorf("receivers %+v, want .101 (master) then .102", x.Receivers)
		}
		for range cs {
			<-done
		}
		synctest.Wait()
		for _, c := range cs {
			checkGot(t, c, data)
		}
		if ss := s.Sessions(); len(ss) != 0 {
			t.Errorf("%d sessions listed after the last client finished", len(ss))
		}
	})
}

// TestSessionsPXEPass: a PXE MTFTP pass is listed with its acknowledging
// client while it runs, and not after its last block is ACKed.
func TestSessionsPXEPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(4)
		data := testData(3*PXEBlockSize+10, 4)
		s := newTestServer(t, n, map[string][]byte{"pxelinux.0": data})
		srvConn := n.Listen(srvIP)
		p := newPXEServer(s, srvConn)
		group := netip.AddrPortFrom(DefaultPXEGroup, DefaultPXEClientPort) // iPXE's: the file has no group of its own
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.run(ctx)

		cl := n.Listen("192.0.2.101")
		defer cl.Close()
		gc := n.Join("192.0.2.101", group) // DATA after block 1 goes only to the group
		defer gc.Close()
		req := (&tftp.Request{Op: tftp.OpRRQ, Filename: "pxelinux.0", Mode: "octet"}).Marshal(nil)
		cl.WriteTo(req, srvConn.Addr())
		buf := make([]byte, 1024)
		// read waits for DATA want on c, skipping earlier blocks (the
		// group's copy of block 1 and repeats).
		read := func(c *memnet.Conn, want uint16) {
			t.Helper()
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				k, _, err := c.ReadFrom(buf)
				if err != nil || tftp.PacketOpcode(buf[:k]) != tftp.OpDATA {
					t.Fatalf("waiting for DATA %d: %v %x", want, err, buf[:k])
				}
				if blk, _, _ := tftp.ParseData(buf[:k]); blk == want {
					return
				}
			}
		}
		read(cl, 1)
		ss := s.Sessions()
		if len(ss) != 1 || ss[0].Dialect != "pxe" || ss[0].File != "pxelinux.0" || ss[0].Blocks != 4 || ss[0].Position != 1 ||
			len(ss[0].Receivers) != 1 || ss[0].Receivers[0].Addr != cl.Addr() || !ss[0].Receivers[0].Master {
			t.Fatalf("during the pass: %+v", ss)
		}
		for blk := uint16(1); blk <= 4; blk++ {
			cl.WriteTo(tftp.AppendAck(nil, blk), srvConn.Addr())
			if blk < 4 {
				read(gc, blk+1)
			}
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if ss := s.Sessions(); len(ss) != 0 {
			t.Errorf("after the last ACK: %+v", ss)
		}
	})
}
