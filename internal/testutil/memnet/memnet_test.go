package memnet

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mtftpd/mtftpd/internal/udpio"
)

// recv reads everything that arrives within 100 × Latency.
func recv(t *testing.T, c *Conn) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var got []string
	buf := make([]byte, 64)
	for {
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("ReadFrom: %v, want a timeout", err)
			}
			return got
		}
		got = append(got, string(buf[:k]))
	}
}

func TestUnicastFIFOAndBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		a, b := n.Listen("192.0.2.1"), n.Listen("192.0.2.2")
		for _, s := range []string{"1", "2", "3"} {
			a.WriteTo([]byte(s), b.Addr())
		}
		if k, _ := a.WriteDatagrams(b.Addr(), []udpio.Datagram{{Hdr: []byte("h"), Payload: []byte("4")}, {Payload: []byte("5")}}); k != 1 {
			t.Errorf("WriteDatagrams reported %d calls, want 1", k)
		}
		got := recv(t, b)
		if want := []string{"1", "2", "3", "h4", "5"}; !equal(got, want) {
			t.Errorf("got %q, want %q (FIFO without impairment)", got, want)
		}
		if k := n.Sent(b.Addr()); k != 5 {
			t.Errorf("Sent = %d, want 5", k)
		}
	})
}

func TestGroupAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(1)
		g := netip.MustParseAddrPort("239.1.2.3:1758")
		src := n.Listen("192.0.2.1")
		m1, m2 := n.Join("192.0.2.2", g), n.Join("192.0.2.3", g)
		if m1.Addr() != netip.MustParseAddrPort("192.0.2.2:1758") {
			t.Errorf("member address %v", m1.Addr())
		}
		src.WriteTo([]byte("x"), g)
		if a, b := recv(t, m1), recv(t, m2); len(a) != 1 || len(b) != 1 {
			t.Fatalf("members got %q and %q, want one datagram each", a, b)
		}
		m2.Close()
		if _, _, err := m2.ReadFrom(make([]byte, 8)); !errors.Is(err, ErrClosed) {
			t.Errorf("ReadFrom after Close: %v, want ErrClosed", err)
		}
		src.WriteTo([]byte("y"), g)
		if a := recv(t, m1); len(a) != 1 {
			t.Errorf("remaining member got %q", a)
		}
		if k := n.Sent(g); k != 2 {
			t.Errorf("Sent(group) = %d, want 2", k)
		}
	})
}

// TestImpairments checks that Loss, Dup and Reorder act at about their rate
// and that a seed replays the same outcome.
func TestImpairments(t *testing.T) {
	run := func(seed uint64) []string {
		var got []string
		synctest.Test(t, func(t *testing.T) {
			n := New(seed)
			n.Loss, n.Dup, n.Reorder = 0.2, 0.2, 0.2
			a, b := n.Listen("192.0.2.1"), n.Listen("192.0.2.2")
			for i := range 1000 {
				a.WriteTo([]byte{byte(i >> 8), byte(i)}, b.Addr())
				time.Sleep(n.Latency / 2) // so a datagram held back lands behind later ones
			}
			got = recv(t, b)
		})
		return got
	}
	got := run(3)
	// 1000 × 0.8 kept × 1.2 copies = 960; ±100 is > 6 standard deviations.
	if len(got) < 860 || len(got) > 1060 {
		t.Errorf("%d datagrams arrived, want about 960", len(got))
	}
	dups, reordered := 0, 0
	seen := map[string]bool{}
	for i, s := range got {
		if seen[s] {
			dups++
		}
		seen[s] = true
		if i > 0 && s < got[i-1] {
			reordered++
		}
	}
	if dups < 100 || reordered < 50 {
		t.Errorf("%d duplicates, %d reorderings: impairments not applied", dups, reordered)
	}
	if !equal(got, run(3)) {
		t.Error("the same seed gave a different outcome")
	}
	if equal(got, run(4)) {
		t.Error("another seed gave the same outcome")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
