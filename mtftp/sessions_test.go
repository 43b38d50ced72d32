package mtftp

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestSessionsSnapshot samples Sessions while two clients share a stream
// and after they are done.
func TestSessionsSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newMemNet(3)
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
