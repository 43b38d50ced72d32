package mtftp

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"testing/synctest"
)

// storeAll offers every data shard of every incomplete stripe of data to
// rc once, as a carousel pass would.
func storeAll(rc *recvState, data []byte) {
	g := rc.g
	for st := range g.stripes {
		for i := range g.dataIn(st) {
			off, n := g.span(st, i)
			rc.store(st, i, data[off:off+int64(n)])
		}
	}
}

// TestPartialSlowSinkNeverBlocks: while the sink is stuck, storing shards
// never waits for it (in the bubble, a receive loop blocked on the sink
// is a deadlock): completed stripes wait within the budget and the
// shards beyond it are counted lost. Once the sink moves, what was lost
// comes again and every byte reaches it, once and right; the download
// ends only when the sink has taken the last stripe. A sink error ends
// it and the sink is not called again; a cancelled wait returns.
func TestPartialSlowSinkNeverBlocks(t *testing.T) {
	setup := func(t *testing.T) (*recvState, []byte) {
		g, _ := newGeometry(1460*64*600-100, 1460, 64, 64) // 600 stripes, 56 MB: more than the budget
		rc := fakePartial(t, g)
		data := make([]byte, g.size)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		return rc, data
	}
	t.Run("slow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rc, data := setup(t)
			release := make(chan struct{})
			got := make([]byte, len(data))
			var delivered int64
			rc.deliver = func(off int64, b []byte) error {
				<-release
				if !bytes.Equal(got[off:off+int64(len(b))], make([]byte, len(b))) {
					return errors.New("delivered twice")
				}
				copy(got[off:], b)
				delivered += int64(len(b))
				return nil
			}
			rc.startSink()
			defer rc.stopSink()
			storeAll(rc, data)
			synctest.Wait()
			if rc.bufBytes > partialBudget || rc.lostShards == 0 {
				t.Fatalf("sink stuck: %d bytes held (budget %d), %d shards lost; want the budget full and the rest lost", rc.bufBytes, partialBudget, rc.lostShards)
			}
			if rc.complete == rc.g.stripes {
				t.Fatalf("all %d stripes complete with the sink stuck and a %d-byte budget", rc.complete, partialBudget)
			}
			close(release)
			for pass := 0; rc.complete < rc.g.stripes; pass++ {
				if pass == 10 {
					t.Fatalf("%d of %d stripes complete after %d passes", rc.complete, rc.g.stripes, pass)
				}
				// The sink takes what is complete (each round it takes
				// sinkQueue stripes: bounded by the stripe count).
				for n := int64(0); (len(rc.ready) > 0 || rc.sinkOut > 0) && n <= rc.g.stripes; n++ {
					synctest.Wait()
					rc.pumpSink()
				}
				storeAll(rc, data)
			}
			if err := rc.finishPartial(t.Context()); err != nil {
				t.Fatal(err)
			}
			if delivered != int64(len(data)) || !bytes.Equal(got, data) {
				t.Fatalf("%d of %d bytes delivered, equal %v", delivered, len(data), bytes.Equal(got, data))
			}
			if rc.bufBytes != 0 || len(rc.bufs) != 0 || rc.sinkOut != 0 {
				t.Fatalf("after the end: %d bytes, %d buffers held, %d with the sink", rc.bufBytes, len(rc.bufs), rc.sinkOut)
			}
		})
	})
	t.Run("error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rc, data := setup(t)
			broken := errors.New("disk full")
			calls, after := 0, 0
			rc.deliver = func(int64, []byte) error {
				calls++
				if calls > 3 {
					after++
				}
				if calls >= 3 {
					return broken
				}
				return nil
			}
			rc.startSink()
			storeAll(rc, data)
			synctest.Wait()
			rc.pumpSink()
			if err := rc.finishPartial(t.Context()); !errors.Is(err, broken) {
				t.Fatalf("finish: %v, want the sink's error", err)
			}
			rc.stopSink()
			if after != 0 {
				t.Fatalf("the sink was called %d times after its error", after)
			}
		})
	})
	t.Run("cancel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rc, data := setup(t)
			release := make(chan struct{})
			rc.deliver = func(int64, []byte) error { <-release; return nil }
			rc.startSink()
			storeAll(rc, data)
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := rc.finishPartial(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("finish with the sink stuck and ctx cancelled: %v", err)
			}
			close(release)
			rc.stopSink() // returns once the call under way does
		})
	})
}
