// Package filestore is the read-only file cache shared by every TFTP
// transfer, and the root jail that every requested name passes through.
//
// A file is mapped once per version (path, device, inode, size, mtime) and
// the mapping is shared, reference counted, by all transfers of that
// version, so server memory does not grow with the number of clients. A
// file replaced on disk gets a new mapping while running transfers finish on
// the old one.
//
// The package must never write: files are opened O_RDONLY and mapped
// PROT_READ, and Data must never be written to. It must never follow a
// symbolic link out of the root (every open goes through os.Root, which also
// refuses absolute links), never serve anything but regular files, and
// never block on open: FIFOs are opened O_NONBLOCK and refused.
package filestore

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors. Errors returned by this package wrap exactly one of them
// when the condition applies, so callers pick the TFTP error code with
// errors.Is: ErrNotFound → 1 (file not found), ErrAccess and ErrBadName →
// 2 (access violation). Anything else (I/O, mmap failure, a closed Store)
// wraps none of them and maps to 0 (not defined).
var (
	// ErrNotFound: a file or directory component does not exist.
	ErrNotFound = errors.New("file not found")
	// ErrAccess: the name escapes the root (".." element, symlink out of
	// the root, absolute symlink), names something that is not a regular
	// file (directory, device, FIFO, socket), or permission is denied.
	ErrAccess = errors.New("access violation")
	// ErrBadName: the name is empty, contains NUL, is longer than
	// MaxNameLen, or is empty after cleaning.
	ErrBadName = errors.New("invalid file name")
)

// Source fills the root from elsewhere before a file is opened: the
// upstream origin cache (internal/origin) fetches the file into the root
// and verifies it. Ensure gets a cleaned name and must be safe for
// concurrent use; its error, wrapping ErrNotFound or ErrAccess where one
// applies, is Get's.
type Source interface {
	Ensure(name string) error
}

// Stats are counters since Open; a snapshot, not live values.
type Stats struct {
	Opens  int64 // successful Gets
	Hits   int64 // Gets that shared an existing mapping
	Maps   int64 // mappings created (an empty file makes one with no mmap)
	Unmaps int64 // mappings released after their last reference
	Live   int64 // mappings currently held (Maps - Unmaps), idle ones included
	Idle   int64 // of those, mappings no handle uses, kept for the next Get (KeepIdle)
}

// Store serves files beneath one root directory. It is safe for concurrent
// use by any number of goroutines.
type Store struct {
	root      *os.Root
	escapeErr error // os.Root's unexported "path escapes from parent" value

	source Source // nil: the root is all there is

	mu      sync.Mutex
	closed  bool
	entries map[fileKey]*mapping // live mappings: in use (refs > 0) or idle
	stats   Stats

	// Idle mappings (KeepIdle): at most idleMax, each for idleTTL after
	// its last Release, least recently released first.
	idleMax   int
	idleTTL   time.Duration
	idle      list.List // *mapping
	idleTimer *time.Timer
}

// fileKey identifies one version of one file. Two opens with equal keys
// see the same bytes, so they may share a mapping. While a mapping is live
// its descriptor is open, so its inode cannot be freed and reused: an equal
// key really is the same file.
type fileKey struct {
	name       string
	dev, ino   uint64
	size       int64
	mtimeNanos int64
}

// mapping is one mapped file version, shared by all handles to it.
type mapping struct {
	key   fileKey
	f     *os.File // kept open for Truncated's fstat; closed on unmap
	data  []byte   // nil for an empty file
	mtime time.Time
	refs  int // guarded by Store.mu
	// idleEl is m's place in Store.idle while no handle uses it (guarded
	// by Store.mu), idleUntil when it is unmapped if none takes it.
	idleEl    *list.Element
	idleUntil time.Time

	nasOnce sync.Once
	nasSize int64
	nasErr  error
}

// Open returns a Store serving files beneath root. The root directory is
// opened once; renaming it later does not change what is served.
func Open(root string) (*Store, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("filestore: open root: %w", err)
	}
	return &Store{
		root:      r,
		escapeErr: probeEscapeErr(r),
		entries:   make(map[fileKey]*mapping),
	}, nil
}

// probeEscapeErr obtains the error value os.Root uses for "path escapes
// from parent". The os package does not export it, and matching on its text
// would break silently; asking the root for ".." yields the very value, so
// errors.Is can recognise it exactly.
func probeEscapeErr(r *os.Root) error {
	_, err := r.Stat("..")
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// SetSource makes every Get ask src for the file first. Call it before
// the first Get.
func (s *Store) SetSource(src Source) { s.source = src }

// Root returns the root directory as given to Open.
func (s *Store) Root() string { return s.root.Name() }

// Close closes the root: later Gets fail with an error wrapping
// fs.ErrClosed. Files already handed out stay valid until they are
// Released. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	gone := s.dropIdle(func(*mapping) bool { return true })
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
	s.mu.Unlock()
	unmapAll(gone)
	return s.root.Close()
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Get returns a referenced handle to the regular file name (as sent by a
// client; it is cleaned with CleanName) beneath the root. The caller must
// call Release exactly once when done with it.
//
// Errors are *fs.PathError values (Op "get", Path the cleaned name, or the
// quoted raw name if it could not be cleaned) wrapping ErrNotFound,
// ErrAccess or ErrBadName where one applies.
//
// Handles to the same file version share one mapping. When the file was
// replaced or changed on disk, Get makes a new mapping; older handles keep
// reading the version they got.
func (s *Store) Get(name string) (*File, error) {
	clean, err := CleanName(name)
	if err != nil {
		return nil, &fs.PathError{Op: "get", Path: quoteName(name), Err: err}
	}
	m, err := s.get(clean)
	if err != nil {
		return nil, &fs.PathError{Op: "get", Path: clean, Err: err}
	}
	return &File{s: s, m: m}, nil
}

func (s *Store) get(name string) (*mapping, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, fs.ErrClosed
	}
	if s.source != nil {
		if err := s.source.Ensure(name); err != nil {
			return nil, err
		}
	}

	// Refuse non-regular files before opening them: opening a device can
	// have side effects (tape rewind, modem hangup) and a FIFO would block.
	// The check races with renames, so the fstat below is the one that
	// counts; this one just avoids touching devices in the common case.
	fi, err := s.root.Stat(name)
	if err != nil {
		return nil, s.classify(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(fi.Mode())
	}

	f, key, mtime, err := s.openRegular(name)
	if err != nil {
		return nil, err
	}
	if m := s.share(key); m != nil {
		f.Close()
		return m, nil
	}

	// Map outside the lock: madvise(WILLNEED) may start disk I/O, and one
	// slow file must not stall Gets of every other file.
	data, err := mapFile(f, key.size)
	if err != nil {
		f.Close()
		return nil, err
	}

	s.mu.Lock()
	if m := s.entries[key]; m != nil {
		// Another Get mapped the same version meanwhile; use that one so
		// there stays one mapping per version.
		s.take(m)
		s.mu.Unlock()
		unmapFile(data)
		f.Close()
		return m, nil
	}
	m := &mapping{key: key, f: f, data: data, mtime: mtime, refs: 1}
	s.entries[key] = m
	s.stats.Opens++
	s.stats.Maps++
	s.stats.Live++
	s.mu.Unlock()
	return m, nil
}

// openRegular opens name through the root without blocking and returns it
// only if fstat says it is a regular file.
func (s *Store) openRegular(name string) (*os.File, fileKey, time.Time, error) {
	f, err := s.root.OpenFile(name, openFlags, 0)
	if err != nil {
		return nil, fileKey{}, time.Time{}, s.classify(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fileKey{}, time.Time{}, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fileKey{}, time.Time{}, notRegular(fi.Mode())
	}
	dev, ino := devIno(fi)
	key := fileKey{name: name, dev: dev, ino: ino, size: fi.Size(), mtimeNanos: fi.ModTime().UnixNano()}
	return f, key, fi.ModTime(), nil
}

// share takes a reference to the live mapping for key, if there is one.
func (s *Store) share(key fileKey) *mapping {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.entries[key]
	if m == nil {
		return nil
	}
	s.take(m)
	return m
}

// take adds a reference to m, live in entries, taking it out of the idle
// list if no handle used it. Store.mu is held.
func (s *Store) take(m *mapping) {
	if m.idleEl != nil {
		s.idle.Remove(m.idleEl)
		m.idleEl = nil
		s.stats.Idle--
	}
	m.refs++
	s.stats.Opens++
	s.stats.Hits++
}

// release drops one reference. After the last one m is kept idle
// (KeepIdle) or unmapped.
func (s *Store) release(m *mapping) {
	s.mu.Lock()
	m.refs--
	if m.refs > 0 {
		s.mu.Unlock()
		return
	}
	if m.refs < 0 {
		s.mu.Unlock()
		panic("filestore: mapping released more often than referenced")
	}
	var gone []*mapping
	if s.idleMax > 0 && !s.closed {
		m.idleUntil = time.Now().Add(s.idleTTL)
		m.idleEl = s.idle.PushBack(m)
		s.stats.Idle++
		n := s.idle.Len() - s.idleMax
		gone = s.dropIdle(func(*mapping) bool { n--; return n >= 0 })
		if s.idleTimer == nil {
			s.idleTimer = time.AfterFunc(s.idleTTL, s.expireIdle)
		}
	} else {
		s.forget(m)
		gone = []*mapping{m}
	}
	s.mu.Unlock()
	unmapAll(gone)
}

// KeepIdle keeps up to n mappings that no handle uses for ttl after their
// last Release (0: unmap at once, the default), so that the next Get of
// the same file version finds its pages mapped. Mapping a file again
// costs a page fault per 64 KiB on its first read (fault-around), which
// a virtual machine's page tables make dear: a lock-step client reading
// 64 MiB at blksize 65464 made the server fault ~1,000 times per
// download (docs/design.md, "Mappings kept idle"). Call it before the
// first Get.
func (s *Store) KeepIdle(n int, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idleMax, s.idleTTL = n, ttl
}

// forget takes m out of entries and counts its unmapping. Store.mu is held.
func (s *Store) forget(m *mapping) {
	delete(s.entries, m.key)
	s.stats.Unmaps++
	s.stats.Live--
}

// dropIdle takes idle mappings out, oldest first, while drop says so, and
// returns them for unmapAll. Store.mu is held.
func (s *Store) dropIdle(drop func(*mapping) bool) []*mapping {
	var gone []*mapping
	for e := s.idle.Front(); e != nil; e = s.idle.Front() {
		m := e.Value.(*mapping)
		if !drop(m) {
			break
		}
		s.idle.Remove(e)
		m.idleEl = nil
		s.stats.Idle--
		s.forget(m)
		gone = append(gone, m)
	}
	return gone
}

// expireIdle unmaps the idle mappings whose time is up and rearms the
// timer for the next one.
func (s *Store) expireIdle() {
	now := time.Now()
	s.mu.Lock()
	gone := s.dropIdle(func(m *mapping) bool { return !m.idleUntil.After(now) })
	s.idleTimer = nil
	if e := s.idle.Front(); e != nil {
		s.idleTimer = time.AfterFunc(e.Value.(*mapping).idleUntil.Sub(now), s.expireIdle)
	}
	s.mu.Unlock()
	unmapAll(gone)
}

// unmapAll tears down mappings no longer reachable from the Store.
func unmapAll(ms []*mapping) {
	for _, m := range ms {
		unmapFile(m.data)
		m.f.Close()
	}
}

// classify wraps an error from os.Root with the sentinel it stands for.
func (s *Store) classify(err error) error {
	var sentinel error
	switch {
	case errors.Is(err, fs.ErrClosed):
		return err
	case s.escapeErr != nil && errors.Is(err, s.escapeErr):
		sentinel = ErrAccess
	case errors.Is(err, fs.ErrNotExist):
		sentinel = ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		sentinel = ErrAccess
	default:
		sentinel = classifyErrno(err)
	}
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

func notRegular(mode fs.FileMode) error {
	return fmt.Errorf("%w: not a regular file (%s)", ErrAccess, mode.Type())
}

// quoteName makes a name that failed cleaning safe to print: quoted, with
// control bytes escaped, and cut to a length a log line can carry.
func quoteName(name string) string {
	const max = 64
	if len(name) > max {
		return strconv.QuoteToASCII(name[:max]) + "..."
	}
	return strconv.QuoteToASCII(name)
}

// File is one caller's handle to a mapped file version, returned by Get.
// Its methods are safe for concurrent use, but Release must be the last
// call: Data, NetasciiSize and Truncated are valid only until then.
type File struct {
	s        *Store
	m        *mapping
	released atomic.Bool
}

// Name returns the cleaned, root-relative name.
func (f *File) Name() string { return f.m.key.name }

// Size returns the file size when it was mapped.
func (f *File) Size() int64 { return f.m.key.size }

// ModTime returns the modification time when the file was mapped.
func (f *File) ModTime() time.Time { return f.m.mtime }

// Data returns the file contents: a read-only mapping shared with every
// other handle to this file version. The Store owns it; it is valid until
// this handle's Release, after which Data returns nil. Writing to it
// faults and kills the process. It is nil for an empty file.
//
// If the file is truncated on disk, reading the slice past the new end of
// file raises SIGBUS: read it under ReadMapped or CatchFault.
func (f *File) Data() []byte {
	if f.released.Load() {
		return nil
	}
	return f.m.data
}

// errReleased reports use of a File after Release.
var errReleased = errors.New("filestore: use of released File")

// NetasciiSize returns the size of the file after netascii conversion
// (LF → CR LF, CR → CR NUL; RFC 1350 §5, RFC 764), the value to answer a
// tsize query with in netascii mode. It is computed once per mapping and
// shared by all handles. If the file was truncated under us, reading the
// mapping faults; that is recovered and reported as an error (also cached:
// that mapping cannot be read in full again).
func (f *File) NetasciiSize() (int64, error) {
	if f.released.Load() {
		return 0, errReleased
	}
	m := f.m
	m.nasOnce.Do(func() {
		m.nasErr = ReadMapped(func() { m.nasSize = NetasciiLen(m.data) })
		if m.nasErr != nil {
			m.nasErr = fmt.Errorf("%s: netascii size: %w", m.key.name, m.nasErr)
		}
	})
	return m.nasSize, m.nasErr
}

// Truncated reports whether the file this handle maps (the same inode, via
// fstat of the descriptor kept with the mapping) is now shorter than Size.
// A sender calls it after a failed read to tell "file truncated under
// transfer" from other errors. It reports false after Release, or if fstat
// fails.
func (f *File) Truncated() bool {
	if f.released.Load() {
		return false
	}
	fi, err := f.m.f.Stat()
	if err != nil {
		return false
	}
	return fi.Size() < f.m.key.size
}

// Release drops this handle's reference; the mapping is unmapped when the
// last handle to it is released. Calling Release more than once is a no-op.
func (f *File) Release() {
	if f.released.Swap(true) {
		return
	}
	f.s.release(f.m)
}
