package dhcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

func withLeaseFile(path string) func(*Server) {
	return func(s *Server) {
		s.LeaseFile = path
		s.Hosts = []Host{{MAC: mac(50), IP: netip.MustParseAddr("192.0.2.50")}}
	}
}

// A restart keeps every address: bound, static, released (as a hint) and
// the quarantine.
func TestLeasesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s1 := newServer(t, withLeaseFile(path))
	got := map[int]netip.Addr{}
	for _, i := range []int{1, 2, 3} {
		got[i] = yiaddr(dora(t, s1, mac(i), inBcast, t0))
	}
	got[50] = yiaddr(dora(t, s1, mac(50), inBcast, t0, uefiX64()...)) // its arch is kept too
	id := opt(optClientID, []byte("client-id-7"))
	got[7] = yiaddr(dora(t, s1, mac(7), inBcast, t0, id))
	handle(t, s1, build(t, dhcpv4.MessageTypeRelease, mac(2), dhcpv4.WithClientIP(got[2].AsSlice())), inBcast, t0.Add(time.Minute))
	handle(t, s1, build(t, dhcpv4.MessageTypeDecline, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(got[3].AsSlice()))), inBcast, t0.Add(time.Minute))
	before := s1.Leases()
	if err := s1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	s2 := newServer(t, withLeaseFile(path))
	if after := s2.Leases(); !equalJSON(before, after) {
		t.Fatalf("leases after restart:\n%+v\nwant\n%+v", after, before)
	}
	now := t0.Add(2 * time.Minute)
	for _, i := range []int{1, 2, 50} {
		if ip := yiaddr(handle(t, s2, build(t, dhcpv4.MessageTypeDiscover, mac(i)), inBcast, now)); ip != got[i] {
			t.Errorf("mac(%d) offered %v after restart, had %v", i, ip, got[i])
		}
	}
	if ip := yiaddr(handle(t, s2, build(t, dhcpv4.MessageTypeDiscover, mac(99), id), inBcast, now)); ip != got[7] {
		t.Errorf("client id 7 offered %v after restart, had %v", ip, got[7])
	}
	want3 := build(t, dhcpv4.MessageTypeDiscover, mac(4), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(got[3].AsSlice())))
	if ip := yiaddr(handle(t, s2, want3, inBcast, now)); ip == got[3] {
		t.Errorf("declined %v offered after restart: the quarantine was lost", ip)
	}
	// Renewal straight after a restart works too.
	renew := build(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithClientIP(got[1].AsSlice()))
	if o := handle(t, s2, renew, inBcast, now); o == nil || o.Pkt.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renew after restart: %v", o)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestCorruptLeaseFileSetAside(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":    `{"version":1,"leases":[{"mac":"52:54`,
		"bad address": `{"version":1,"leases":[{"mac":"52:54:00:12:00:01","ip":"2001:db8::1"}]}`,
		"bad mac":     `{"version":1,"leases":[{"mac":"zz","ip":"192.0.2.100"}]}`,
		"version":     `{"version":99,"leases":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "leases.json")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			s := newServer(t, func(s *Server) {
				s.LeaseFile = path
				s.Log = zerolog.New(&logs)
			})
			if !strings.Contains(logs.String(), `"level":"error"`) || !strings.Contains(logs.String(), "corrupt") {
				t.Errorf("no error logged: %s", logs.String())
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("set-aside files: %v", aside)
			}
			if b, _ := os.ReadFile(aside[0]); string(b) != content {
				t.Errorf("set-aside file holds %q, want the original", b)
			}
			// In its place, a fresh journal without leases.
			if ls := leasesOnDisk(t, path); len(ls) != 0 {
				t.Errorf("fresh journal holds %v", ls)
			}
			dora(t, s, mac(1), inBcast, t0) // and the server works
			if ls := leasesOnDisk(t, path); len(ls) != 1 {
				t.Errorf("journal holds %v, want the new lease", ls)
			}
		})
	}
}

// A crash mid-write leaves a temp file; it never replaces the real one and
// is cleaned up at the next start.
func TestTornTempFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s1 := newServer(t, withLeaseFile(path))
	ip := yiaddr(dora(t, s1, mac(1), inBcast, t0))
	s1.Shutdown(context.Background())
	good, _ := os.ReadFile(path)
	torn := path + tempInfix + "123456"
	if err := os.WriteFile(torn, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := newServer(t, withLeaseFile(path))
	if ls := s2.Leases(); len(ls) != 1 || ls[0].IP != ip {
		t.Errorf("leases %+v, want %v from the real file", ls, ip)
	}
	if _, err := os.Stat(torn); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("torn temp file left: %v", err)
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Errorf("good file set aside: %v", aside)
	}
}

// When the lease cannot be made durable, the ACK is withheld and the old
// file stays as it was; the client's retry succeeds once the disk works.
func TestWriteFailureWithholdsAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s := newServer(t, withLeaseFile(path))
	dora(t, s, mac(1), inBcast, t0)
	before, _ := os.ReadFile(path)
	var fail atomic.Bool
	fail.Store(true)
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		if fail.Load() {
			return errors.New("no space left on device")
		}
		return real(f, off, data)
	}
	offer := handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(2)), inBcast, t0)
	out, err := s.Handle(selecting(t, mac(2), offer, inBcast), inBcast, t0)
	if err == nil || out != nil {
		t.Fatalf("Handle = %v, %v; want no ACK and the error", out, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("lease file changed by a failed write")
	}
	if e, a := s.Counters.LeaseWriteErrors.Load(), s.Counters.Ack.Load(); e != 1 || a != 1 {
		t.Errorf("LeaseWriteErrors %d Ack %d, want 1 and 1 (the withheld ACK is not counted)", e, a)
	}
	fail.Store(false)
	if o := handle(t, s, selecting(t, mac(2), offer, inBcast), inBcast, t0.Add(time.Second)); o == nil || yiaddr(o) != yiaddr(offer) {
		t.Fatalf("retry: %v", o)
	}
	if ls := leasesOnDisk(t, path); len(ls) != 2 {
		t.Errorf("%d leases on disk, want 2", len(ls))
	}
}

func leasesOnDisk(t *testing.T, path string) []Lease {
	t.Helper()
	ls, err := ReadLeaseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// A storm of concurrent REQUESTs shares lease-file writes (group commit)
// and every ACK finds its lease on disk.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s := newServer(t, func(s *Server) {
		s.LeaseFile = path
		s.Subnets[0].RangeStart = netip.MustParseAddr("192.0.2.10")
		s.Subnets[0].RangeEnd = netip.MustParseAddr("192.0.2.250")
	})
	var writes atomic.Int64
	real := s.store.write
	s.store.write = func(f *os.File, off int64, data []byte) error {
		writes.Add(1)
		time.Sleep(20 * time.Millisecond) // a slow disk makes the batching visible
		return real(f, off, data)
	}
	const n = 100
	offers := make([]*Outgoing, n)
	for i := range n {
		offers[i] = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(i)), inBcast, t0)
	}
	var wg sync.WaitGroup
	acks := make([]*Outgoing, n)
	for i := range n {
		wg.Go(func() {
			out, err := s.Handle(selecting(t, mac(i), offers[i], inBcast), inBcast, t0)
			if err != nil {
				t.Error(err)
			}
			acks[i] = out
			// The ACK's lease is durable by the time Handle returns.
			found := false
			for _, l := range leasesOnDisk(t, path) {
				found = found || l.IP == yiaddr(out)
			}
			if !found {
				t.Errorf("ACK for %v before its lease was on disk", yiaddr(out))
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, a := range acks {
		if a == nil || a.Pkt.MessageType() != dhcpv4.MessageTypeAck || seen[yiaddr(a)] {
			t.Fatalf("client %d: %v", i, a)
		}
		seen[yiaddr(a)] = true
	}
	if w := writes.Load(); w > n/4 {
		t.Errorf("%d lease-file writes for %d concurrent ACKs: no group commit", w, n)
	} else {
		t.Logf("%d ACKs, %d lease-file writes", n, w)
	}
	if got := len(leasesOnDisk(t, path)); got != n {
		t.Errorf("%d leases on disk, want %d", got, n)
	}
}
