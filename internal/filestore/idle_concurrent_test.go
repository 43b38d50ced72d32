package filestore

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// KeepIdle with a tiny TTL and cap, many files and versions,
// concurrent Get/Release and timers expiring under -race; then Close
// while handles are still held.
func TestKeepIdleConcurrent(t *testing.T) {
	root, s := newStore(t)
	s.KeepIdle(3, time.Millisecond)
	version := func(n, v int) []byte { return bytes.Repeat([]byte{byte(n*7 + v)}, 4096+v) }
	for n := range 8 {
		writeFile(t, filepath.Join(root, fmt.Sprint(n)), version(n, 0))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for v := 1; v < 40; v++ {
			replaceFile(t, filepath.Join(root, fmt.Sprint(v%8)), version(v%8, v))
			time.Sleep(200 * time.Microsecond)
		}
	})
	for w := range 12 {
		wg.Go(func() {
			for i := range 300 {
				n := (w + i) % 8
				f, err := s.Get(fmt.Sprint(n))
				if err != nil {
					t.Error(err)
					return
				}
				d := f.Data()
				if len(d) < 4096 || d[0] != d[len(d)-1] {
					t.Errorf("torn data %d", len(d))
				}
				if i%5 == 0 {
					time.Sleep(time.Millisecond)
				}
				f.Release()
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.Idle > 3 || st.Live != st.Maps-st.Unmaps || st.Live != st.Idle {
		t.Errorf("stats after all released: %+v", st)
	}
	time.Sleep(20 * time.Millisecond)
	if st := s.Stats(); st.Idle != 0 || st.Live != 0 {
		t.Errorf("after TTL: %+v", st)
	}
	h := mustGet(t, s, "1")
	s.Close()
	_ = h.Data()[0]
	h.Release()
	if st := s.Stats(); st.Live != 0 || st.Idle != 0 {
		t.Errorf("after Close: %+v", st)
	}
}
