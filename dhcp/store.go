package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
)

// compactMin is the fewest records appended between two compactions. A
// compaction rewrites every live record, so it runs after
// max(compactMin, 2 × live records) appends: the rewrite costs at most
// half a record per record appended, and the journal stays under
// 3 × live + compactMin records — 16,384 records of about 60 bytes is
// 1 MiB, replayed at start in milliseconds (docs/dhcp-leases.md).
const compactMin = 16384

// compactEvery is how many appends wait for the next compaction after
// one that left live records.
func (st *leaseStore) compactEvery(live int) int { return max(st.minCompact, 2*live) }

// leaseStore makes the lease table durable in a journal (journal.go)
// with group commit: a caller that needs its change on disk waits for
// an append that started after the change. One writer at a time takes
// every change made since the last append, appends their records and
// fdatasyncs once, so a storm of N ACKs costs a handful of syncs, not N.
// Every compactEvery records a goroutine rewrites the journal from a
// snapshot of the table (temp file + rename) while appends go on; only
// copying the records appended meanwhile and the rename hold them up.
type leaseStore struct {
	path      string
	batch     func(buf []byte) (data []byte, seq uint64, n int, all bool) // changed records, under the table lock
	snapshot  func(taken bool) (recs []jrec, seq uint64)                  // every live record, under the table lock; taken: unmark the changes
	write     func(f *os.File, off int64, data []byte) error              // write at off (the end) and fdatasync; tests replace it
	onWrite   func(err error)
	onCompact func(err error, live, records int, took time.Duration)
	// minCompact is compactMin (tests lower it); compactHook, if set,
	// runs once a compaction's snapshot is written, before it takes the
	// writer role (tests hold it there while appends go on).
	minCompact  int
	compactHook func()

	mu      sync.Mutex
	cond    *sync.Cond
	durable uint64
	writing bool // one writer at a time: the fields below are the writer's
	// busy mirrors writing (an append, or a compaction's switch), read
	// without mu: an OFFER makes a promise only while no write runs
	// (promise.go), and a reader writes itself only then (readLoop).
	busy atomic.Bool
	// lastSync is how long the last append took (ns), write and
	// fdatasync: a reader writes itself only while syncs are quick.
	lastSync atomic.Int64

	f         *os.File // the journal, open to write; nil: rewrite it whole first
	gen       uint64   // bumped when f is replaced: a compaction begun before is void
	size      int64    // bytes of records in the journal: where the next append goes
	room      int64    // the file's length: size + the zeros grown ahead (grow)
	records   int      // records in it
	appended  int      // records appended since the last compaction
	compactAt int      // appended count that starts the next compaction
	// compacting: a compaction runs (guarded by mu, not the writer role).
	compacting bool
	buf        []byte
}

func newLeaseStore(path string) *leaseStore {
	st := &leaseStore{path: path, compactAt: compactMin, minCompact: compactMin}
	st.write = st.appendSync
	st.cond = sync.NewCond(&st.mu)
	return st
}

// growBy is how far the journal grows ahead of its records: one append's
// bound, so a grow serves thousands of ACKs.
const growBy = maxWrite

// appendSync writes data at off, the end of the records, and fdatasyncs
// it. The file is grown ahead with zeros first (grow), so that the
// fdatasync of an append that lands inside it has only data to flush:
// the file's length, and on ext4 its block map, are unchanged, and no
// journal commit of the filesystem is waited for (docs/dhcp-leases.md,
// "Room grown ahead").
func (st *leaseStore) appendSync(f *os.File, off int64, data []byte) error {
	if err := st.grow(f, off+int64(len(data))); err != nil {
		return err
	}
	if _, err := f.WriteAt(data, off); err != nil {
		return err
	}
	return fdatasync(f)
}

// grow makes the file at least need bytes long, writing zeros (not
// fallocate: its unwritten extents are converted, a metadata change,
// at the first write into each block) from its end to need + growBy,
// and syncs them. A torn grow leaves zeros or nothing past the records:
// both read as the end of the journal.
func (st *leaseStore) grow(f *os.File, need int64) error {
	if need <= st.room {
		return nil
	}
	to := need + growBy
	if _, err := f.WriteAt(make([]byte, to-st.room), st.room); err != nil {
		return err
	}
	if err := fdatasync(f); err != nil {
		return err
	}
	st.room = to
	return nil
}

// wait returns once every change up to seq is on disk, writing it itself
// if no write is in flight (the leader), else waiting for the one in
// flight and, if that did not cover seq, leading the next.
func (st *leaseStore) wait(seq uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.durable < seq {
		if st.writing {
			st.cond.Wait()
			continue
		}
		st.takeRole()
		st.mu.Unlock()
		done, err := st.lead()
		st.mu.Lock()
		if err == nil && done > st.durable {
			st.durable = done
		}
		st.dropRole()
		if err != nil {
			return err
		}
	}
	return nil
}

// takeRole makes the caller the one writer (st.mu held, st.writing
// false): an append, or a compaction's switch.
func (st *leaseStore) takeRole() {
	st.writing = true
	st.busy.Store(true)
}

// dropRole ends the caller's writer role (st.mu held) and wakes the
// waiters.
func (st *leaseStore) dropRole() {
	st.busy.Store(false)
	st.writing = false
	st.cond.Broadcast()
}

// readerSyncMax is the longest last append after which a read loop still
// writes the journal itself (readLoop): what it delays meanwhile waits no
// longer than that. An SSD's flush is well under it, a disk's 5–15 ms is
// not, and there every write stays with the commit goroutine.
const readerSyncMax = time.Millisecond

// quickSyncs reports whether the last append took at most readerSyncMax
// (true before the first).
func (st *leaseStore) quickSyncs() bool {
	return st.lastSync.Load() <= int64(readerSyncMax)
}

// covers reports whether every change up to seq is on disk already.
func (st *leaseStore) covers(seq uint64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.durable >= seq
}

// lead appends the changes made since the last append (or rewrites the
// journal whole if it is not open or an append failed) and returns the
// change number it made durable, 0 if it covered only part of them.
func (st *leaseStore) lead() (uint64, error) {
	if st.f == nil {
		recs, seq := st.snapshot(true)
		err := st.rewrite(recs)
		st.onWrite(err)
		return seq, err
	}
	data, seq, n, all := st.batch(st.buf[:0])
	if cap(data) <= maxWrite+maxPayload {
		st.buf = data[:0]
	}
	if n == 0 {
		return seq, nil
	}
	began := time.Now()
	err := st.write(st.f, st.size, data)
	st.lastSync.Store(int64(time.Since(began)))
	st.onWrite(err)
	if err != nil {
		// The file may end in part of this write, and the changes it
		// held are no longer marked: the next writer rewrites it whole.
		st.f.Close()
		st.f = nil
		return 0, err
	}
	st.size += int64(len(data))
	st.records += n
	st.appended += n
	if st.appended >= st.compactAt {
		st.startCompaction()
	}
	if !all {
		return 0, nil
	}
	return seq, nil
}

// rewrite replaces the journal with recs (atomicfile: a crash leaves the
// old journal or the new one) and opens it to append.
func (st *leaseStore) rewrite(recs []jrec) error {
	data := encodeSnapshot(recs)
	if err := atomicfile.Write(st.path, data, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(st.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if st.f != nil {
		st.f.Close()
	}
	st.gen++
	st.f, st.size, st.room, st.records, st.appended = f, int64(len(data)), int64(len(data)), len(recs), 0
	st.compactAt = st.compactEvery(len(recs))
	return nil
}

// encodeSnapshot is a whole journal holding recs, leases by address.
func encodeSnapshot(recs []jrec) []byte {
	slices.SortFunc(recs, func(a, b jrec) int {
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		if a.kind == recQuarantine {
			return a.expiry.Compare(b.expiry)
		}
		return a.ip.Compare(b.ip)
	})
	b := make([]byte, 0, len(journalMagic)+len(recs)*80)
	b = append(b, journalMagic...)
	for i := range recs {
		b = appendRecord(b, &recs[i])
	}
	return b
}

// startCompaction is called by the writer: nothing is being appended, so
// the table's snapshot covers every record in the journal so far.
func (st *leaseStore) startCompaction() {
	st.mu.Lock()
	running := st.compacting
	st.compacting = true
	st.mu.Unlock()
	if running {
		return
	}
	recs, _ := st.snapshot(false)
	go st.compact(recs, st.gen, st.size, st.records)
}

// compact writes a new journal from recs, the table when the journal was
// from bytes long with fromRecords records (generation gen), then — as the writer, so no
// append runs — copies the records appended since after it and renames it
// into place. A record appended meanwhile is in the old file until the
// rename and in the new one after it; a crash at any point leaves one of
// the two whole (the temp file is removed at the next start).
func (st *leaseStore) compact(recs []jrec, gen uint64, from int64, fromRecords int) {
	began := time.Now()
	data := encodeSnapshot(recs)
	tmp, err := atomicfile.Create(st.path, 0o600)
	if err == nil {
		defer tmp.Abort()
		_, err = tmp.Write(data)
		if err == nil {
			err = tmp.Sync() // now, so that Commit's fsync, under the writer role, is short
		}
	}
	if st.compactHook != nil {
		st.compactHook()
	}
	st.mu.Lock()
	for st.writing {
		st.cond.Wait()
	}
	st.takeRole()
	st.mu.Unlock()
	live := len(recs)
	if err == nil {
		err = st.switchTo(tmp, gen, from, int64(len(data)), live, st.records-fromRecords)
	}
	if err != nil {
		st.compactAt = st.appended + st.compactEvery(live) // try again later; the old journal is whole
	}
	records := st.records // read as the writer: once the role is dropped, an append may change it
	st.mu.Lock()
	st.dropRole() // appends go on; the report below is still part of the compaction
	st.mu.Unlock()
	if st.onCompact != nil {
		st.onCompact(err, live, records, time.Since(began))
	}
	// Only now: close waits for this, so no compaction's report is
	// logged after the store is closed (a test's log may be gone).
	st.mu.Lock()
	st.compacting = false
	st.cond.Broadcast()
	st.mu.Unlock()
}

// switchTo completes a compaction as the writer: the old journal's
// records from offset from on (tail of them) go after the snapshot of
// live records, size bytes, in tmp, and tmp replaces the journal.
func (st *leaseStore) switchTo(tmp *atomicfile.File, gen uint64, from, size int64, live, tail int) error {
	if st.f == nil || st.gen != gen {
		return errors.New("the journal was rewritten meanwhile")
	}
	n, err := io.Copy(tmp, io.NewSectionReader(st.f, from, st.size-from))
	if err != nil {
		return err
	}
	if err := tmp.Commit(); err != nil {
		return err
	}
	st.gen++
	f, err := os.OpenFile(st.path, os.O_RDWR, 0)
	st.f.Close()
	if err != nil {
		st.f = nil // the next writer rewrites it whole
		return err
	}
	st.f, st.size, st.room, st.records, st.appended = f, size+n, size+n, live+tail, tail
	st.compactAt = st.compactEvery(live)
	return nil
}

// close waits for a compaction in flight and closes the journal; the
// next write rewrites it whole.
func (st *leaseStore) close() {
	st.mu.Lock()
	for st.writing || st.compacting {
		st.cond.Wait()
	}
	if st.f != nil {
		st.f.Close()
		st.f = nil
	}
	st.mu.Unlock()
}

// The lease table's side of the journal.

// journalQuarantine queues a DECLINE's quarantine for the journal.
func (t *leaseTable) journalQuarantine(ip netip.Addr, until time.Time) {
	if t.dirty != nil {
		t.quarantined = append(t.quarantined, declinedEntry{ip, until})
	}
}

// record is ip's state for the journal: its lease (current or expired,
// kept as a hint) or the promise of its offer (promise.go), whichever
// ends later, or none.
func (t *leaseTable) record(ip netip.Addr) jrec {
	b := t.byIP[ip]
	if b == nil || b.ip != ip || (b.expiry.IsZero() && b.promiseEl == nil) {
		return jrec{kind: recDelete, ip: ip}
	}
	start, expiry := b.start, b.expiry
	if b.promiseEl != nil && b.promised.After(expiry) {
		expiry = b.promised
		if start.IsZero() {
			start = t.now
		}
	}
	return jrec{kind: recLease, ip: ip, start: start, expiry: expiry, static: b.static,
		mac: b.mac, clientID: b.clientID, hostname: b.hostname, arch: b.arch}
}

// appendDirty appends the records of the changes marked since the last
// call, up to about maxWrite bytes; all reports that none are left.
func (t *leaseTable) appendDirty(b []byte) (out []byte, n int, all bool) {
	for ip := range t.dirty {
		r := t.record(ip)
		at := len(b)
		if b = appendRecord(b, &r); len(b) > maxWrite && at > 0 {
			return b[:at], n, false
		}
		delete(t.dirty, ip)
		n++
	}
	for len(t.quarantined) > 0 {
		q := t.quarantined[0]
		at := len(b)
		if b = appendRecord(b, &jrec{kind: recQuarantine, ip: q.ip, expiry: q.until}); len(b) > maxWrite && at > 0 {
			return b[:at], n, false
		}
		t.quarantined = t.quarantined[1:]
		n++
	}
	t.quarantined = nil
	return b, n, true
}

// snapshotRecords is every record a fresh journal needs: each address's
// lease or promise and each quarantine still running at the latest time Handle saw.
func (t *leaseTable) snapshotRecords() []jrec {
	recs := make([]jrec, 0, len(t.byIP)+len(t.declined))
	for ip, b := range t.byIP {
		if (!b.expiry.IsZero() || b.promiseEl != nil) && b.ip == ip {
			recs = append(recs, t.record(ip))
		}
	}
	for ip, until := range t.declined {
		if until.After(t.now) {
			recs = append(recs, jrec{kind: recQuarantine, ip: ip, expiry: until})
		}
	}
	return recs
}

// replay applies one journal record to a table being loaded. A lease
// record moves its client to the address (whoever held it loses it); the
// quarantines are collected in q, applied by endReplay.
func (t *leaseTable) replay(r *jrec, q map[netip.Addr]time.Time) error {
	switch r.kind {
	case recLease:
		key := clientKey(r.clientID, r.mac)
		b := t.byKey[key]
		if b == nil {
			b = t.create(key, r.clientID, r.mac)
		} else if string(b.mac) != string(r.mac) {
			if t.byMAC[string(b.mac)] == b {
				delete(t.byMAC, string(b.mac))
			}
			t.macDel(b)
			b.mac = slices.Clone(r.mac)
			t.macAdd(b)
			if len(b.mac) > 0 {
				t.byMAC[string(b.mac)] = b
			}
		}
		b.hostname, b.start, b.expiry, b.static, b.arch = r.hostname, r.start, r.expiry, r.static, r.arch
		t.setIP(b, r.ip)
	case recDelete:
		if o := t.byIP[r.ip]; o != nil {
			t.remove(o)
		}
	case recQuarantine:
		q[r.ip] = r.expiry
	}
	return nil
}

// endReplay applies the quarantines, in the order they end (the table's
// queue expects it; sweep ends those whose time is up).
func (t *leaseTable) endReplay(q map[netip.Addr]time.Time) {
	ds := make([]declinedEntry, 0, len(q))
	for ip, until := range q {
		ds = append(ds, declinedEntry{ip, until})
	}
	slices.SortFunc(ds, func(a, b declinedEntry) int { return a.until.Compare(b.until) })
	for _, d := range ds {
		t.quarantine(d.ip, d.until)
	}
}

// The owner's side: leaseDB is the lease table with its lock and its
// journal, shared by the DHCPv4 Server and the DHCPv6 Server6 (each has
// its own).
type leaseDB struct {
	mu     sync.Mutex // guards leases (and their pools), limit
	leases leaseTable
	store  *leaseStore // nil without a lease file
	limit  limiter

	// Set by the owner before openStore.
	path                string
	log                 *zerolog.Logger
	newTable            func() leaseTable
	writes, writeErrors *atomic.Uint64
}

// openStore loads LeaseFile into the table, rewrites it as a compact
// journal (which also migrates a JSON lease file and drops a torn tail)
// and starts marking changes.
func (db *leaseDB) openStore(now time.Time) error {
	if err := db.loadLeases(db.path, now); err != nil {
		return err
	}
	st := newLeaseStore(db.path)
	st.batch, st.snapshot, st.onWrite, st.onCompact = db.journalBatch, db.journalSnapshot, db.leaseWritten, db.compacted
	if err := st.rewrite(db.leases.snapshotRecords()); err != nil {
		return fmt.Errorf("dhcp: LeaseFile: cannot write the lease journal: %w", err)
	}
	db.leases.dirty = make(map[netip.Addr]struct{})
	db.store = st
	return nil
}

func (db *leaseDB) journalBatch(buf []byte) ([]byte, uint64, int, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	data, n, all := db.leases.appendDirty(buf)
	return data, db.leases.seq, n, all
}

// journalSnapshot copies the table for a rewrite. taken: the rewrite is
// made durable before any waiter is released, so the changes marked so
// far need no append; a compaction's snapshot is not (they stay marked).
func (db *leaseDB) journalSnapshot(taken bool) ([]jrec, uint64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if taken {
		clear(db.leases.dirty)
		db.leases.quarantined = nil
	}
	return db.leases.snapshotRecords(), db.leases.seq
}

func (db *leaseDB) compacted(err error, live, records int, took time.Duration) {
	if err != nil {
		db.log.Error().Err(err).Str("file", db.path).
			Msg("dhcp: lease journal compaction failed: the journal keeps growing until one succeeds")
		return
	}
	db.log.Debug().Str("file", db.path).Int("live", live).Int("records", records).Dur("took", took).
		Msg("dhcp: lease journal compacted")
}

// closeStore retracts the promises of offers still outstanding, makes
// every change durable and closes the journal.
func (db *leaseDB) closeStore() error {
	if db.store == nil {
		return nil
	}
	db.mu.Lock()
	// Offers still outstanding were never ACKed: their promises go.
	db.leases.retractPromises()
	if len(db.leases.dirty) > 0 || len(db.leases.quarantined) > 0 {
		db.leases.seq++ // offers that ended a lease hint: on disk too
	}
	seq := db.leases.seq
	db.mu.Unlock()
	err := db.durable(seq)
	db.store.close()
	return err
}

// tempInfix marks a lease file's temp files: LeaseFile + ".tmp-" + random.
const tempInfix = atomicfile.TempInfix

// loadLeases reads path into db.leases: a journal (torn last write
// dropped; damage further in: the records before it kept, the file
// copied aside), or a JSON lease file of old (kept beside, as
// path.v1.json), or nothing. A file that is neither is renamed to
// path.corrupt-<unix time> and reported, and the table starts empty; a
// lease file is never overwritten in place. Temp files left by a crash
// mid-rewrite are removed: the real file was never replaced by them.
func (db *leaseDB) loadLeases(path string, now time.Time) error {
	for _, tmp := range atomicfile.RemoveTemps(path) {
		db.log.Warn().Str("file", tmp).Msg("dhcp: removed a temp lease file left by an interrupted write")
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		db.log.Info().Str("file", path).Msg("dhcp: no lease file yet, starting empty")
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: LeaseFile: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("dhcp: LeaseFile: %w", err)
	}
	head := make([]byte, len(journalMagic))
	k, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("dhcp: LeaseFile: %w", err)
	}
	if string(head[:k]) == journalMagic {
		return db.loadJournal(f, fi.Size(), path, now)
	}
	t := db.newTable()
	var lf leaseFile
	data, err := io.ReadAll(f)
	if err == nil {
		err = json.Unmarshal(data, &lf)
	}
	if err == nil {
		err = t.restore(&lf)
	}
	if err != nil {
		aside := path + ".corrupt-" + strconv.FormatInt(now.Unix(), 10)
		if rerr := os.Rename(path, aside); rerr != nil {
			return fmt.Errorf("dhcp: lease file %s is corrupt (%v) and cannot be set aside: %w", path, err, rerr)
		}
		db.log.Error().Err(err).Str("file", path).Str("moved_to", aside).Int("bytes", len(data)).
			Msg("dhcp: lease file corrupt: set aside, starting with no leases (clients keep their addresses if still free)")
		return nil
	}
	old := path + ".v1.json"
	if _, err := os.Lstat(old); err == nil {
		old += "-" + strconv.FormatInt(now.Unix(), 10)
	}
	if err := copyAside(path, old); err != nil {
		return fmt.Errorf("dhcp: LeaseFile: keeping the JSON lease file before migrating it: %w", err)
	}
	db.leases = t
	db.log.Info().Str("file", path).Str("json_kept_as", old).Int("leases", len(lf.Leases)).Int("declined", len(lf.Declined)).
		Msg("dhcp: JSON lease file loaded; it is rewritten as a lease journal")
	return nil
}

// loadJournal replays the journal f (size bytes) into db.leases.
func (db *leaseDB) loadJournal(f *os.File, size int64, path string, now time.Time) error {
	t := db.newTable()
	q := map[netip.Addr]time.Time{}
	end, err := readJournal(f, size, func(r *jrec) error { return t.replay(r, q) })
	t.endReplay(q)
	var ce *CorruptError
	switch {
	case errors.As(err, &ce):
		aside := path + ".corrupt-" + strconv.FormatInt(now.Unix(), 10)
		if cerr := copyAside(path, aside); cerr != nil {
			return fmt.Errorf("dhcp: %s: %w; and it cannot be copied aside: %w", path, err, cerr)
		}
		db.log.Error().Err(err).Str("file", path).Str("copied_to", aside).Int64("offset", ce.Offset).
			Int("records_kept", end.records).Int64("bytes_lost", size-ce.Offset).
			Msg("dhcp: lease journal corrupt: the records before the damage are kept, the ones after it lost (clients keep their addresses if still free)")
	case err != nil:
		return fmt.Errorf("dhcp: LeaseFile: %w", err)
	case end.torn > 0:
		db.log.Warn().Str("file", path).Int64("offset", end.good).Int64("bytes", end.torn).
			Msg("dhcp: lease journal ends in a torn write (a power cut mid-append, before its ACKs left): dropped")
	}
	db.leases = t
	db.log.Info().Str("file", path).Int("records", end.records).Int("leases", len(t.byIP)).Int("declined", len(t.declined)).
		Msg("dhcp: leases loaded")
	return nil
}

// copyAside keeps path's current content as aside (a hard link, else a
// copy), so that rewriting path later loses nothing.
func copyAside(path, aside string) error {
	if err := os.Link(path, aside); err == nil {
		return nil
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := atomicfile.Create(aside, 0o600)
	if err != nil {
		return err
	}
	defer dst.Abort()
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	return dst.CommitNew()
}

// ReadLeaseFile returns the leases in a lease file (journal or JSON)
// without changing it: for tools and tests. A torn last write is
// ignored, as the server would; damage is an error wrapping
// ErrJournalCorrupt.
func ReadLeaseFile(path string) ([]Lease, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t := newLeaseTable()
	if bytes.HasPrefix(data, []byte(journalMagic)) {
		q := map[netip.Addr]time.Time{}
		if _, err := readJournal(bytes.NewReader(data), int64(len(data)), func(r *jrec) error { return t.replay(r, q) }); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t.leases(), nil
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("%s: neither a lease journal nor a JSON lease file: %w", path, err)
	}
	if err := t.restore(&lf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t.leases(), nil
}
