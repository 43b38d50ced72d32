package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
)

func testRecords() []jrec {
	return []jrec{
		{kind: recLease, ip: netip.MustParseAddr("192.0.2.100"), start: t0, expiry: t0.Add(time.Hour),
			mac: mac(1), clientID: []byte{1, 0x52, 0x54, 0, 0x12, 0, 1}, hostname: "node-1\x00\xff", arch: "7"},
		{kind: recLease, ip: netip.MustParseAddr("192.0.2.101"), expiry: t0.Add(time.Nanosecond), static: true, mac: mac(2)},
		{kind: recLease, ip: netip.MustParseAddr("192.0.2.102"), start: time.Unix(-1e11, 5).UTC(), expiry: t0, clientID: []byte("id")},
		{kind: recDelete, ip: netip.MustParseAddr("192.0.2.100")},
		{kind: recQuarantine, ip: netip.MustParseAddr("192.0.2.103"), expiry: t0.Add(DeclineHold)},
	}
}

func encodeJournal(recs []jrec) []byte {
	b := []byte(journalMagic)
	for i := range recs {
		b = appendRecord(b, &recs[i])
	}
	return b
}

// readAll reads a journal and returns its records (copied).
func readAll(data []byte) ([]jrec, journalEnd, error) {
	var got []jrec
	end, err := readJournal(bytes.NewReader(data), int64(len(data)), func(r *jrec) error {
		got = append(got, *r)
		return nil
	})
	return got, end, err
}

func sameRecords(t *testing.T, got, want []jrec) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := fmt.Sprintf("%+v", got[i]), fmt.Sprintf("%+v", want[i])
		if g != w || !got[i].start.Equal(want[i].start) || !got[i].expiry.Equal(want[i].expiry) {
			t.Errorf("record %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

func TestJournalRoundTrip(t *testing.T) {
	want := testRecords()
	got, end, err := readAll(encodeJournal(want))
	if err != nil || end.torn != 0 || end.records != len(want) {
		t.Fatalf("end %+v, err %v", end, err)
	}
	sameRecords(t, got, want)
}

// A power cut mid-append leaves the last record cut short at any byte,
// or its unwritten sectors as zeros: it is dropped, everything before it
// kept, and it is not reported as corruption.
func TestJournalTornTail(t *testing.T) {
	recs := testRecords()
	whole := encodeJournal(recs)
	prefix := encodeJournal(recs[:len(recs)-1])
	last := len(whole) - len(prefix)
	check := func(name string, data []byte) {
		t.Helper()
		got, end, err := readAll(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if end.good != int64(len(prefix)) || end.torn != int64(len(data)-len(prefix)) {
			t.Fatalf("%s: end %+v, want good %d", name, end, len(prefix))
		}
		sameRecords(t, got, recs[:len(recs)-1])
	}
	for cut := 1; cut < last; cut++ {
		check(fmt.Sprintf("cut at %d of %d", cut, last), whole[:len(prefix)+cut])
	}
	// The record laid across a sector boundary, one of its two sectors
	// never written (zeros), wherever the boundary falls in it.
	for shift := 1; shift < last; shift++ {
		// A filler record sized so that the last record starts shift
		// bytes before a sector boundary.
		filler := jrec{kind: recLease, ip: netip.MustParseAddr("192.0.2.104"), mac: mac(4)}
		base := encodeJournal(append(slices.Clone(recs[:len(recs)-1]), filler))
		need := (sectorSize - shift) - len(base)%sectorSize
		for need < 0 {
			need += sectorSize
		}
		filler.hostname = strings.Repeat("h", need)
		head := encodeJournal(append(slices.Clone(recs[:len(recs)-1]), filler))
		if (len(head)+shift)%sectorSize != 0 {
			t.Fatalf("layout: %d + %d", len(head), shift)
		}
		full := encodeJournal(append(slices.Clone(recs[:len(recs)-1]), filler, recs[len(recs)-1]))
		for _, lost := range []string{"first", "second"} {
			data := slices.Clone(full)
			if lost == "first" {
				clear(data[len(head) : len(head)+shift])
			} else {
				clear(data[len(head)+shift:])
			}
			// The same inside the room grown ahead: zeros after it up to
			// the end, farther than one append writes.
			if lost == "first" && shift%7 == 0 {
				data = append(data, make([]byte, 2*maxWrite)...)
			}
			got, end, err := readAll(data)
			if bytes.Equal(data[:len(full)], full) { // the lost bytes were zeros anyway: the record is whole
				if err != nil || end.torn != 0 || len(got) != len(recs)+1 {
					t.Fatalf("shift %d, %s sector lost, nothing changed: end %+v, err %v", shift, lost, end, err)
				}
				continue
			}
			// (torn, or all zeros after head: a record never written)
			if err != nil || end.good != int64(len(head)) || end.torn+end.zeros == 0 || len(got) != len(recs) {
				t.Fatalf("shift %d, %s sector lost: end %+v, %d records, err %v", shift, lost, end, len(got), err)
			}
		}
	}
}

// The store grows the journal ahead with zeros (leaseStore.grow): zeros
// up to the end of the file, however many, are its end, not a tear.
func TestJournalZeroRoom(t *testing.T) {
	recs := testRecords()
	whole := encodeJournal(recs)
	for _, n := range []int{1, recHeader, 4096, 3 * maxWrite} {
		data := append(slices.Clone(whole), make([]byte, n)...)
		got, end, err := readAll(data)
		if err != nil || end.good != int64(len(whole)) || end.torn != 0 || end.zeros != int64(n) {
			t.Fatalf("%d zeros after the records: end %+v, err %v", n, end, err)
		}
		sameRecords(t, got, recs)
	}
	// Data after the zeros, farther than one append could have reached:
	// damage, whatever the zeros before it.
	data := append(slices.Clone(whole), make([]byte, maxWrite+recHeader)...)
	data = append(data, 'x')
	if _, _, err := readAll(data); !errors.Is(err, ErrJournalCorrupt) {
		t.Errorf("a byte %d bytes after the records: err %v, want corruption", maxWrite+recHeader, err)
	}
}

// Damage that a torn write cannot explain is an error naming the offset;
// the records before it are applied.
func TestJournalCorruptMiddle(t *testing.T) {
	recs := testRecords()
	data := encodeJournal(recs)
	off := len(encodeJournal(recs[:2]))
	for name, mutate := range map[string]func(b []byte){
		"bit flip":        func(b []byte) { b[off+recHeader+3] ^= 0x10 },
		"length too long": func(b []byte) { b[off+3] = 0x7f },
		"bad kind, good checksum": func(b []byte) {
			r := appendRecord(nil, &jrec{kind: 'X', ip: netip.MustParseAddr("192.0.2.1")})
			copy(b[off:], r)
			copy(b[off+len(r):], make([]byte, len(encodeJournal(recs[:3]))-off-len(r)))
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := slices.Clone(data)
			mutate(b)
			got, end, err := readAll(b)
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrJournalCorrupt) || ce.Offset != int64(off) {
				t.Fatalf("err %v, want corruption at offset %d", err, off)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(off)) {
				t.Errorf("error %q does not name the offset", err)
			}
			if end.good != int64(off) || len(got) != 2 {
				t.Errorf("end %+v, %d records; want the 2 before the damage", end, len(got))
			}
		})
	}
	// A record that looks torn (zeros) with more than one append's worth
	// of records after it was synced long ago: corruption, not a tear.
	var many []jrec
	for i := range maxWrite/13 + 10 { // 13 bytes a deletion
		many = append(many, jrec{kind: recDelete, ip: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})})
	}
	b := encodeJournal(append(slices.Clone(recs[:2]), many...))
	clear(b[off : off+recHeader])
	if _, _, err := readAll(b); !errors.Is(err, ErrJournalCorrupt) {
		t.Errorf("zeroed record %d bytes before the end: err %v, want corruption", len(b)-off, err)
	}
	if _, _, err := readAll([]byte("MTFTPDL0")); !errors.Is(err, ErrJournalCorrupt) {
		t.Errorf("wrong magic: err %v", err)
	}
}

// The server keeps the records before a damaged one, copies the file
// aside and says where the damage is; a torn tail is only a warning.
func TestJournalDamageAtStart(t *testing.T) {
	// at: the first appended record, the last append, the records' end
	// (zeros grown ahead follow it).
	type offsets struct{ first, last, end int }
	for _, tc := range []struct {
		name    string
		damage  func(b []byte, at offsets) []byte
		corrupt bool
		torn    bool // warned about
	}{
		{"torn tail", func(b []byte, at offsets) []byte { return b[:at.end-3] }, false, true},
		// (its one sector never written: the room's zeros, the end)
		{"last append lost in the room grown ahead", func(b []byte, at offsets) []byte { clear(b[at.last:at.end]); return b }, false, false},
		{"flipped bit in the middle", func(b []byte, at offsets) []byte { b[at.first+recHeader+2] ^= 1; return b }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases")
			s1 := newServer(t, withLeaseFile(path))
			var ips []netip.Addr
			for i := range 3 {
				ips = append(ips, yiaddr(dora(t, s1, mac(i), inBcast, t0)))
			}
			s1.Shutdown(context.Background())
			s2 := newServer(t, withLeaseFile(path)) // appends to the compacted journal
			size := func() int {
				s2.store.mu.Lock() // the writer role passes under mu
				defer s2.store.mu.Unlock()
				return int(s2.store.size)
			}
			var at offsets
			at.first = size()
			dora(t, s2, mac(9), inBcast, t0) // damaged below: a record in the middle
			at.last = size()
			dora(t, s2, mac(10), inBcast, t0)
			at.end = size()
			s2.store.close()
			b, _ := os.ReadFile(path)
			if len(b) <= at.end {
				t.Fatalf("journal of %d bytes, records end at %d: no room grown ahead", len(b), at.end)
			}
			os.WriteFile(path, tc.damage(slices.Clone(b), at), 0o600)
			var logs bytes.Buffer
			s3 := newServer(t, func(s *Server) {
				withLeaseFile(path)(s)
				s.Log = zerolog.New(&logs)
			})
			got := map[netip.Addr]bool{}
			for _, l := range s3.Leases() {
				got[l.IP] = true
			}
			for _, ip := range ips {
				if !got[ip] {
					t.Errorf("lease %v before the damage lost: %v", ip, s3.Leases())
				}
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			isCorrupt := strings.Contains(logs.String(), "corrupt")
			if isCorrupt != tc.corrupt || (len(aside) == 1) != tc.corrupt {
				t.Fatalf("reported corrupt %v, copies aside %v; want %v:\n%s", isCorrupt, aside, tc.corrupt, logs.String())
			}
			if tc.corrupt {
				if !strings.Contains(logs.String(), `"offset":`) || !strings.Contains(logs.String(), "corrupt at offset") {
					t.Errorf("no offset in the log: %s", logs.String())
				}
				if kept, _ := os.ReadFile(aside[0]); !bytes.Equal(kept, tc.damage(slices.Clone(b), at)) {
					t.Error("the copy aside is not the damaged file")
				}
			} else if strings.Contains(logs.String(), "torn write") != tc.torn {
				t.Errorf("warning about a torn write: want %v: %s", tc.torn, logs.String())
			}
			// The journal was rewritten whole: it reads clean.
			if _, end, err := readAll(mustRead(t, path)); err != nil || end.torn != 0 {
				t.Errorf("journal after start: end %+v, err %v", end, err)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Whatever the sequence of DISCOVERs, REQUESTs, RELEASEs and DECLINEs,
// replaying the journal gives the table the server had: every change
// that reaches the disk is marked.
func TestJournalMatchesTable(t *testing.T) {
	for seed := range uint64(20) {
		path := filepath.Join(t.TempDir(), "leases")
		s := newServer(t, withLeaseFile(path))
		rng := rand.New(rand.NewPCG(seed, 7))
		now := t0
		offers := map[int]*Outgoing{}
		for range 300 {
			i := rng.IntN(16)
			var opts []dhcpv4.Modifier
			if i%3 == 0 { // some clients send a client id, changing now and then
				opts = append(opts, opt(optClientID, []byte{byte(i), byte(rng.IntN(2))}))
			}
			switch rng.IntN(6) {
			case 0, 1:
				offers[i] = handle(t, s, build(t, dhcpv4.MessageTypeDiscover, mac(i), opts...), inBcast, now)
			case 2, 3:
				if o := offers[i]; o != nil {
					handle(t, s, selecting(t, mac(i), o, inBcast, opts...), inBcast, now)
				}
			case 4:
				if o := offers[i]; o != nil {
					handle(t, s, build(t, dhcpv4.MessageTypeRelease, mac(i), append(opts, dhcpv4.WithClientIP(yiaddr(o).AsSlice()))...), inBcast, now)
				}
			case 5:
				if o := offers[i]; o != nil {
					handle(t, s, build(t, dhcpv4.MessageTypeDecline, mac(i), append(opts, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(yiaddr(o).AsSlice())))...), inBcast, now)
				}
			}
			now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
		}
		want := s.Leases()
		s.mu.Lock()
		wantQ := 0
		for _, r := range s.leases.snapshotRecords() {
			if r.kind == recQuarantine {
				wantQ++
			}
		}
		s.mu.Unlock()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, err := ReadLeaseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !equalJSON(got, want) {
			t.Fatalf("seed %d: journal replays to\n%+v\nthe table had\n%+v", seed, got, want)
		}
		s2 := newServer(t, withLeaseFile(path))
		s2.leases.now = now
		if gotQ := len(s2.leases.snapshotRecords()) - len(s2.Leases()); gotQ != wantQ {
			t.Errorf("seed %d: %d quarantines after restart, want %d", seed, gotQ, wantQ)
		}
	}
}

// A compaction runs while ACKs go on: they are not held up by it, and
// none of the records appended meanwhile is lost by the rename.
func TestJournalCompactionWithConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	s := newServer(t, func(s *Server) {
		s.LeaseFile = path
		s.Subnets[0].RangeStart = netip.MustParseAddr("192.0.2.10")
		s.Subnets[0].RangeEnd = netip.MustParseAddr("192.0.2.250")
	})
	st := s.store
	st.minCompact = 20
	st.compactAt = 20
	hold, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	st.compactHook = func() {
		once.Do(func() { close(held); <-hold }) // the first compaction waits with its snapshot written
	}
	compactions := make(chan error, 100)
	st.onCompact = func(err error, live, records int, took time.Duration) { compactions <- err }

	acked := map[netip.Addr]bool{}
	var mu sync.Mutex
	ackAll := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				o := dora(t, s, mac(i), inBcast, t0)
				mu.Lock()
				acked[yiaddr(o)] = true
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	ackAll(0, 25) // past 20 records: the first compaction starts and waits
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction started after 25 appends")
	}
	ackAll(25, 60) // appended while the compaction holds a snapshot without them
	close(hold)
	if err := <-compactions; err != nil {
		t.Fatal(err)
	}
	ackAll(60, 100) // a second compaction may run
	s.store.close()
	if len(compactions) > 0 {
		if err := <-compactions; err != nil {
			t.Fatal(err)
		}
	}
	got := map[netip.Addr]bool{}
	for _, l := range leasesOnDisk(t, path) {
		got[l.IP] = true
	}
	for ip := range acked {
		if !got[ip] {
			t.Errorf("ACKed %v, not in the journal after compaction", ip)
		}
	}
	if len(acked) != 100 || len(got) != 100 {
		t.Errorf("%d ACKed, %d on disk, want 100", len(acked), len(got))
	}
	// The journal holds what its counters say.
	recs, end, err := readAll(mustRead(t, path))
	if err != nil || end.good != st.size || len(recs) != st.records {
		t.Errorf("journal: %d records, %d bytes, err %v; store counts %d records, %d bytes", len(recs), end.good, err, st.records, st.size)
	}
}

// A JSON lease file of old loads, becomes a journal, and is kept beside it.
func TestJournalMigratesJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	old := `{"version":1,"leases":[
{"client_id":"01525400120001","mac":"52:54:00:12:00:01","ip":"192.0.2.100","hostname":"n1","start":"2026-03-01T12:00:00Z","expiry":"2026-03-01T13:00:00Z","arch":"7"},
{"mac":"52:54:00:12:00:02","ip":"192.0.2.101","start":"2026-03-01T12:00:00Z","expiry":"2026-03-01T12:30:00Z"}
],"declined":[
{"ip":"192.0.2.102","until":"2026-03-01T12:10:00Z"}
]}
`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s1 := newServer(t, withLeaseFile(path))
	want := s1.Leases()
	if len(want) != 2 || want[0].Hostname != "n1" || want[0].Arch != "7" {
		t.Fatalf("leases from JSON: %+v", want)
	}
	if !bytes.HasPrefix(mustRead(t, path), []byte(journalMagic)) {
		t.Fatal("lease file not rewritten as a journal")
	}
	if kept := mustRead(t, path+".v1.json"); string(kept) != old {
		t.Errorf("JSON kept as %q", kept)
	}
	s1.Shutdown(context.Background())
	s2 := newServer(t, withLeaseFile(path))
	if got := s2.Leases(); !equalJSON(got, want) {
		t.Errorf("after a restart from the journal:\n%+v\nwant\n%+v", got, want)
	}
	if ip := yiaddr(handle(t, s2, build(t, dhcpv4.MessageTypeDiscover, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(netip.MustParseAddr("192.0.2.102").AsSlice()))), inBcast, t0)); ip == netip.MustParseAddr("192.0.2.102") {
		t.Error("the JSON file's quarantine was lost")
	}
	if m, _ := filepath.Glob(path + ".v1.json*"); len(m) != 1 {
		t.Errorf("JSON copies: %v", m)
	}
}

// FuzzJournalRead: any bytes on disk — a damaged or hostile lease file —
// are read within bounds, never panic, and what was read survives a
// rewrite unchanged.
func FuzzJournalRead(f *testing.F) {
	good := encodeJournal(testRecords())
	f.Add(good)
	f.Add(good[:len(good)-7])
	f.Add(append(slices.Clone(good), make([]byte, 100)...))
	bad := slices.Clone(good)
	bad[30] ^= 4
	f.Add(bad)
	f.Add([]byte(journalMagic + "\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab := newLeaseTable()
		q := map[netip.Addr]time.Time{}
		end, err := readJournal(bytes.NewReader(data), int64(len(data)), func(r *jrec) error { return tab.replay(r, q) })
		if end.good > int64(len(data)) || end.good+end.torn+end.zeros > int64(len(data)) || end.torn != 0 && end.zeros != 0 {
			t.Fatalf("end %+v beyond %d bytes", end, len(data))
		}
		if err == nil && end.good+end.torn+end.zeros != int64(len(data)) {
			t.Fatalf("clean read stopped at %+v of %d", end, len(data))
		}
		if err != nil && !errors.Is(err, ErrJournalCorrupt) {
			t.Fatalf("error %v is not ErrJournalCorrupt", err)
		}
		tab.endReplay(q)
		again := encodeSnapshot(tab.snapshotRecords())
		tab2 := newLeaseTable()
		if _, err := readJournal(bytes.NewReader(again), int64(len(again)), func(r *jrec) error { return tab2.replay(r, q) }); err != nil {
			t.Fatalf("rewritten journal does not read back: %v", err)
		}
		if a, b := tab.leases(), tab2.leases(); !equalJSON(a, b) {
			t.Fatalf("rewrite changed the leases:\n%+v\n%+v", a, b)
		}
	})
}
