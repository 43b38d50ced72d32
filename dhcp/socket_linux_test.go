package dhcp

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// journalWriters records which loop makes each journal write of s
// ("reader", "committer", or the stack of any other caller), then runs
// then (if not nil) and the write; it returns a copy of the record.
func journalWriters(s *Server, then func()) func() []string {
	var (
		mu      sync.Mutex
		writers []string
	)
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		buf := make([]byte, 1<<14)
		stack := string(buf[:runtime.Stack(buf, false)])
		who := "other: " + stack
		switch {
		case strings.Contains(stack, "(*Server).readLoop"):
			who = "reader"
		case strings.Contains(stack, "(*Server).commitLoop"):
			who = "committer"
		}
		mu.Lock()
		writers = append(writers, who)
		mu.Unlock()
		if then != nil {
			then()
		}
		return real(f, off, data)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(writers)
	}
}

// written waits (at most 5 s) until every lease change s made is on disk.
func written(t *testing.T, s *Server) {
	t.Helper()
	s.mu.Lock()
	seq := s.leases.seq
	s.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); !s.store.covers(seq); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("change %d never written", seq)
		}
	}
}

// Who writes the journal (readLoop): a reader whose batch drained its
// socket writes itself, after the OFFER it promised has left; a reader
// that read a full batch (recvmmsg on Linux: more was queued) hands the
// write to the commit goroutine and keeps reading. Nothing is lost while
// the reader's own write holds it.
func TestReaderWritesWhenIdle(t *testing.T) {
	s := loopbackServer(t, filepath.Join(t.TempDir(), "leases"), "127.1.1.250")
	entered, gate := make(chan struct{}), make(chan struct{})
	var first, opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	writers := journalWriters(s, func() {
		first.Do(func() {
			close(entered)
			<-gate // hold the first write until the backlog is queued
		})
	})
	serve(t, s)
	t.Cleanup(open) // registered after serve's: runs first, so a failed test still stops
	srv := s.Addrs()[0]
	c, asRelay := loopbackClient(t)
	discover := func(i int) {
		if _, err := c.WriteTo(build(t, dhcpv4.MessageTypeDiscover, mac(i), asRelay...).ToBytes(), srv); err != nil {
			t.Fatal(err)
		}
	}
	offers := map[string]bool{}
	readOffers := func(n int) {
		t.Helper()
		buf := make([]byte, 1500)
		for range n {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := c.ReadFrom(buf)
			if err != nil {
				t.Fatalf("%d OFFERs of %d: %v", len(offers), n, err)
			}
			r, err := dhcpv4.FromBytes(buf[:m])
			if err != nil || r.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("reply %v, %v; want an OFFER", r, err)
			}
			offers[r.ClientHWAddr.String()] = true
		}
	}

	// A lone DISCOVER: its OFFER arrives while the promise's write is
	// held, so it left first; the write is the reader's own.
	discover(1)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the OFFER's promise was never written")
	}
	readOffers(1)
	// The reader is inside that write: a full batch queues on its socket
	// (loopback delivers within the send).
	const backlog = readBatch
	for i := range backlog {
		discover(2 + i)
	}
	open()
	readOffers(backlog)
	if len(offers) != 1+backlog {
		t.Fatalf("%d distinct clients offered, want %d", len(offers), 1+backlog)
	}
	// Every promise made is written by the loops (the test does not
	// write itself: that would be neither).
	written(t, s)
	w := writers()
	if len(w) == 0 || w[0] != "reader" {
		t.Fatalf("writers %q: the lone DISCOVER's promise should be written by the reader", w)
	}
	// The batch read after the held write is a full one: its promises go
	// to the commit goroutine, so the reader reads on.
	committer := false
	for _, who := range w {
		if strings.HasPrefix(who, "other") {
			t.Fatalf("a journal write from neither loop:\n%s", who)
		}
		committer = committer || who == "committer"
	}
	if !committer {
		t.Errorf("writers %q: a full batch's promises should be written by the commit goroutine", w)
	}
}

// On a slow disk (the last append's sync took longer than readerSyncMax)
// the reader stops writing itself: the writes go back to the commit
// goroutine, and the reader keeps answering during them.
func TestReaderLeavesSlowSyncs(t *testing.T) {
	s := loopbackServer(t, filepath.Join(t.TempDir(), "leases"), "127.1.0.250")
	writers := journalWriters(s, func() {
		time.Sleep(2 * readerSyncMax) // a disk slower than readerSyncMax
	})
	serve(t, s)
	srv := s.Addrs()[0]
	c, asRelay := loopbackClient(t)
	// Lone DISCOVERs, one at a time, each offered with a promise to write.
	for i := 1; i <= 3; i++ {
		o := exchange(t, c, srv, build(t, dhcpv4.MessageTypeDiscover, mac(i), asRelay...))
		if o.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("reply %v", o.MessageType())
		}
		written(t, s)
	}
	if w, want := writers(), []string{"reader", "committer", "committer"}; !slices.Equal(w, want) {
		t.Errorf("writers %q, want %q: the first write (no sync timed yet) is the reader's, then the slow syncs keep the writes off it", w, want)
	}
}
