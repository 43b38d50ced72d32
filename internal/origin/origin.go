// Package origin keeps a verified local copy of files whose master copy
// is on another HTTP server (another mtftpd, any web server, an S3
// bucket's HTTP endpoint), so one origin can feed one mtftpd per rack or
// L2 segment (docs/scale.md). A file is fetched once, checked, written to
// a temp file, fsynced and renamed into the cache, and from then on served
// from there (TFTP from the mmap'd filestore, HTTP with sendfile).
//
// Verification: the body must have exactly the Content-Length the origin
// announced (a cut connection is refused), and when the ETag is a strong
// 32-hex-digit tag (S3, MinIO, Swift: the MD5 of the body) the MD5 must
// match it. Otherwise the ETag is kept only for revalidation.
//
// Revalidation: a cached copy older than TTL is checked with a conditional
// GET (If-None-Match, If-Modified-Since) before it is served again; 304
// keeps it, 200 replaces it (running transfers finish on the old inode),
// 404 deletes it. A file sent with Cache-Control: no-store is asked for
// again on every request. If the origin cannot be reached the cached copy is
// served for another TTL: a rack keeps booting through an origin outage.
//
// Bounds (docs/security.md, "Origin cache"): clients choose the names, so
// a failed fetch (404 or any other) is remembered for NegativeTTL in a
// table of at most maxNegative names; the files kept are capped at
// MaxSize bytes, the least recently used evicted first; at most
// maxFlights fetches run at once; and a request waits at most Wait for a
// fetch, which then goes on for the requests that come later.
//
// The package never writes outside Dir, never leaves a partial file under
// a name that is served, and never serves a file it has not verified.
package origin

import (
	"bytes"
	"container/list"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/atomicfile"
	"github.com/mtftpd/mtftpd/internal/filestore"
)

// Defaults for zero Cache fields.
const (
	DefaultTTL     = 5 * time.Minute
	DefaultTimeout = 10 * time.Minute
	// DefaultNegativeTTL is how long a failed fetch is believed: a 404
	// (pxelinux probes a dozen config names per boot — 01-<mac>, hex
	// IPs, default — and a room boots at once; without it every probe is
	// an origin hit), or any other failure (a flood of requests for a
	// name whose fetch fails must not become a flood of GETs, each maybe
	// of gigabytes cut halfway).
	DefaultNegativeTTL = 10 * time.Second
	// DefaultMaxSize caps the cached files: an install tree and a few
	// images. A client can ask for every file of the origin; past the
	// cap the least recently used go.
	DefaultMaxSize = 16 << 30
	// DefaultWait bounds a request's wait for a fetch: TFTP clients give
	// up after a few seconds anyway (a PXE ROM retries its request about
	// four times over some 15 s), and an HTTP client gets a 504 it can
	// retry instead of a connection held for the whole Timeout.
	DefaultWait = 30 * time.Second
	// reserveChunk is how much cache space a fetch of unknown length
	// reserves at a time.
	reserveChunk = 1 << 20
)

// Errors a request can get besides the origin's own answer.
var (
	// ErrWait: the fetch did not finish within Wait; it goes on, and a
	// later request finds the file.
	ErrWait = errors.New("origin: fetch still running")
	// ErrBusy: maxFlights fetches of other names are running.
	ErrBusy = errors.New("origin: too many fetches at once")
	// ErrTooLarge: the file (or the cache space it needs) exceeds
	// MaxSize.
	ErrTooLarge = errors.New("origin: file does not fit in origin.max_size")
)

// maxNegative caps the remembered failures: clients choose the names
// they ask for, and random ones must not grow the table without bound.
// maxFlights caps the fetches running at once (each is a goroutine, a
// connection to the origin and a temp file). Variables so tests can
// lower them.
var (
	maxNegative = 4096
	maxFlights  = 64
)

// Counters count what the cache did; read them at any time.
type Counters struct {
	Hits        atomic.Uint64 // served from the cache without asking the origin
	Fetches     atomic.Uint64 // GETs sent to the origin (one per flight)
	Joined      atomic.Uint64 // requests that waited on a fetch already running
	NotModified atomic.Uint64 // revalidations answered 304
	Refused     atomic.Uint64 // fetches refused: short body, MD5 mismatch, bad status
	Stale       atomic.Uint64 // cached copies served because the origin failed
	Negative    atomic.Uint64 // requests answered from a remembered failure, no GET
	Evicted     atomic.Uint64 // files removed to stay under MaxSize
	WaitExpired atomic.Uint64 // requests that stopped waiting for a fetch (ErrWait)
	Busy        atomic.Uint64 // requests refused with ErrBusy
	Bytes       atomic.Int64  // bytes of cached files now
}

// Cache fetches files below URL into Dir. Set URL and Dir, then call Open.
// Ensure is safe for concurrent use.
type Cache struct {
	// URL is the origin's base; a file name is appended to it.
	URL *url.URL
	// Dir holds files/ (what is served), meta/ (validators) and tmp/.
	Dir string
	// TTL is how long a cached copy is served before it is revalidated;
	// 0 = DefaultTTL, negative = revalidate on every request.
	TTL time.Duration
	// Timeout bounds one fetch; 0 = DefaultTimeout.
	Timeout time.Duration
	// NegativeTTL is how long a failed fetch is remembered and answered
	// without asking again; 0 = DefaultNegativeTTL, negative = never.
	NegativeTTL time.Duration
	// MaxSize caps the bytes of cached files; the least recently used
	// are removed to make room. 0 = DefaultMaxSize, negative = no cap.
	MaxSize int64
	// Wait bounds how long Ensure waits for a fetch; 0 = DefaultWait.
	Wait time.Duration
	// Client makes the requests; nil = a client with Timeout.
	Client *http.Client
	Log    zerolog.Logger

	Counters Counters

	root     *os.Root
	mu       sync.Mutex
	entries  map[string]*entry
	flights  map[string]*flight
	negative list.List // names of entries with neg set, oldest first
	files    map[string]*list.Element
	lru      list.List // *cachedFile, least recently used first
	used     int64     // bytes of the files in lru
	reserved int64     // bytes reserved by fetches running
}

// cachedFile is one file in files/, for the size cap.
type cachedFile struct {
	name string
	size int64
}

// entry is what is known about one name.
type entry struct {
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Size         int64     `json:"size"`
	Checked      time.Time `json:"checked"` // last fetch or 304
	// NoStore: the origin said Cache-Control: no-store (a per-host file
	// rendered by an origin mtftpd): asked again on every request.
	NoStore bool `json:"no_store,omitempty"`
	// neg is set when the fetch at Checked failed: err is its error
	// (wrapping filestore.ErrNotFound for a 404), served until
	// NegativeTTL has passed.
	neg *list.Element
	err error
}

// flight is one fetch that concurrent requests for the same name share.
type flight struct {
	done chan struct{}
	err  error
}

// Sub-directories of Dir.
const (
	filesDir = "files"
	metaDir  = "meta"
	tmpDir   = "tmp"
)

// Open prepares Dir (creating it and its sub-directories as the user
// the process runs as), clears temp files a crash left behind, and counts
// the cached files against MaxSize (evicting the oldest if it shrank).
func (c *Cache) Open() error {
	if c.URL == nil || (c.URL.Scheme != "http" && c.URL.Scheme != "https") || c.URL.Host == "" {
		return fmt.Errorf("origin: %v is not an http(s) URL", c.URL)
	}
	for _, d := range []string{filesDir, metaDir, tmpDir} {
		if err := os.MkdirAll(path.Join(c.Dir, d), 0o755); err != nil {
			return fmt.Errorf("origin: cache directory: %w", err)
		}
	}
	os.RemoveAll(path.Join(c.Dir, tmpDir))
	os.Mkdir(path.Join(c.Dir, tmpDir), 0o755)
	r, err := os.OpenRoot(c.Dir)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	c.root = r
	c.entries = make(map[string]*entry)
	c.flights = make(map[string]*flight)
	c.files = make(map[string]*list.Element)
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.timeout(), CheckRedirect: refuseDirectoryRedirect}
	}
	if err := c.scanFiles(); err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	c.mu.Lock()
	err = c.makeRoom(0, "")
	c.mu.Unlock()
	if err != nil {
		c.Log.Warn().Err(err).Msg("origin: cache over max_size at start")
	}
	return nil
}

// scanFiles puts the files a previous run cached in the LRU list, oldest
// fetch (or revalidation) first, as meta/ says, else by modification
// time.
func (c *Cache) scanFiles() error {
	type found struct {
		name string
		size int64
		at   time.Time
	}
	var all []found
	err := fs.WalkDir(c.root.FS(), filesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return nil
		}
		name := strings.TrimPrefix(p, filesDir+"/")
		f := found{name, st.Size(), st.ModTime()}
		if b, err := c.root.ReadFile(path.Join(metaDir, name+".json")); err == nil {
			var e entry
			if json.Unmarshal(b, &e) == nil && !e.Checked.IsZero() {
				f.at = e.Checked
			}
		}
		all = append(all, f)
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b found) int { return a.at.Compare(b.at) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range all {
		c.setFile(f.name, f.size)
	}
	return nil
}

// Close releases Dir.
func (c *Cache) Close() error {
	if c.root == nil {
		return nil
	}
	return c.root.Close()
}

// FilesDir is the directory the servers serve: verified files only.
func (c *Cache) FilesDir() string { return path.Join(c.Dir, filesDir) }

// The zero fields mean the defaults; negative ones mean what each field
// documents (none for Timeout and Wait, which must be positive).
func (c *Cache) timeout() time.Duration     { return positiveOr(c.Timeout, DefaultTimeout) }
func (c *Cache) wait() time.Duration        { return positiveOr(c.Wait, DefaultWait) }
func (c *Cache) negativeTTL() time.Duration { return nonZeroOr(c.NegativeTTL, DefaultNegativeTTL) }
func (c *Cache) ttl() time.Duration         { return nonZeroOr(c.TTL, DefaultTTL) }

func (c *Cache) maxSize() int64 {
	if c.MaxSize < 0 {
		return math.MaxInt64
	}
	return nonZeroOr(c.MaxSize, DefaultMaxSize)
}

// positiveOr is v, or def when v is zero or negative.
func positiveOr(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// nonZeroOr is v, or def when v is zero.
func nonZeroOr[T int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// errDirectory: the origin redirected a file name to a directory (nginx
// and mtftpd do for "dir" → "dir/"); its listing is not a file.
var errDirectory = fmt.Errorf("%w: a directory on the origin", filestore.ErrAccess)

func refuseDirectoryRedirect(req *http.Request, via []*http.Request) error {
	if strings.HasSuffix(req.URL.Path, "/") {
		return errDirectory
	}
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	return nil
}

// Ensure makes the cached copy of name (a cleaned, root-relative name,
// see filestore.CleanName) present and fresh, fetching it from the origin
// if needed. Concurrent calls for one name share one fetch. Errors wrap
// filestore.ErrNotFound (the origin has no such file) or
// filestore.ErrAccess (it refuses, or it is a directory); ErrWait (the
// fetch takes longer than Wait: it goes on), ErrBusy or ErrTooLarge;
// anything else is a failed fetch. A failure is answered again without
// asking the origin for NegativeTTL.
// It implements filestore.Source.
func (c *Cache) Ensure(name string) error {
	now := time.Now()
	c.mu.Lock()
	e := c.entries[name]
	if e == nil {
		e = c.loadMeta(name)
		if e != nil {
			c.entries[name] = e
		}
	}
	if e != nil && c.fresh(e, now) {
		if e.neg != nil {
			c.mu.Unlock()
			c.Counters.Negative.Add(1)
			return e.err
		}
		c.touch(name)
		c.mu.Unlock()
		c.Counters.Hits.Add(1)
		return nil
	}
	f := c.flights[name]
	if f != nil {
		c.Counters.Joined.Add(1)
	} else {
		if len(c.flights) >= maxFlights {
			c.mu.Unlock()
			c.Counters.Busy.Add(1)
			return fmt.Errorf("%w (%d running): %s", ErrBusy, maxFlights, name)
		}
		f = &flight{done: make(chan struct{})}
		c.flights[name] = f
		var cached *entry
		if e != nil && e.neg == nil {
			cached = e
		}
		go c.fly(name, f, cached)
	}
	c.mu.Unlock()
	t := time.NewTimer(c.wait())
	defer t.Stop()
	select {
	case <-f.done:
		return f.err
	case <-t.C:
		c.Counters.WaitExpired.Add(1)
		return fmt.Errorf("%w after %v: %s", ErrWait, c.wait(), name)
	}
}

// rememberFailure records a failed fetch of name; c.mu is held. At
// maxNegative names the oldest failure is forgotten: O(1), and a flood of
// new names within NegativeTTL cannot grow the table.
func (c *Cache) rememberFailure(name string, err error, now time.Time) {
	if c.negativeTTL() < 0 {
		delete(c.entries, name)
		return
	}
	if old := c.entries[name]; old != nil && old.neg != nil {
		c.negative.MoveToBack(old.neg)
		old.Checked, old.err = now, err
		return
	}
	for c.negative.Len() >= maxNegative {
		front := c.negative.Front()
		c.negative.Remove(front)
		if n := front.Value.(string); c.entries[n] != nil && c.entries[n].neg == front {
			delete(c.entries, n)
		}
	}
	c.entries[name] = &entry{Checked: now, neg: c.negative.PushBack(name), err: err}
}

// forgetFailure drops name's remembered failure, if it has one; c.mu is
// held.
func (c *Cache) forgetFailure(name string) {
	if e := c.entries[name]; e != nil && e.neg != nil {
		c.negative.Remove(e.neg)
		delete(c.entries, name)
	}
}

func (c *Cache) fresh(e *entry, now time.Time) bool {
	if e.neg != nil {
		return now.Sub(e.Checked) < c.negativeTTL()
	}
	return !e.NoStore && now.Sub(e.Checked) < c.ttl()
}

// setFile records name's cached file of size bytes as the most recently
// used; c.mu is held.
func (c *Cache) setFile(name string, size int64) {
	if el := c.files[name]; el != nil {
		f := el.Value.(*cachedFile)
		c.used += size - f.size
		f.size = size
		c.lru.MoveToBack(el)
	} else {
		c.files[name] = c.lru.PushBack(&cachedFile{name, size})
		c.used += size
	}
	c.Counters.Bytes.Store(c.used)
}

// touch marks name's file as just used; c.mu is held.
func (c *Cache) touch(name string) {
	if el := c.files[name]; el != nil {
		c.lru.MoveToBack(el)
	}
}

// dropFile forgets name's file (already removed or to be removed); c.mu
// is held.
func (c *Cache) dropFile(name string) {
	if el := c.files[name]; el != nil {
		c.used -= el.Value.(*cachedFile).size
		c.lru.Remove(el)
		delete(c.files, name)
		c.Counters.Bytes.Store(c.used)
	}
}

// makeRoom evicts the least recently used files until n more bytes fit
// under MaxSize beside what is cached and reserved, then reserves them;
// c.mu is held. Files being fetched are skipped (at most maxFlights of
// them), and so is keep, whose fetch asks. Running transfers of an
// evicted file finish on their open descriptor or mapping.
func (c *Cache) makeRoom(n int64, keep string) error {
	limit := c.maxSize()
	el := c.lru.Front()
	for c.used+c.reserved+n > limit && el != nil {
		f := el.Value.(*cachedFile)
		next := el.Next()
		if _, busy := c.flights[f.name]; !busy && f.name != keep {
			c.root.Remove(path.Join(filesDir, f.name))
			c.root.Remove(path.Join(metaDir, f.name+".json"))
			c.dropFile(f.name)
			if e := c.entries[f.name]; e != nil && e.neg == nil {
				delete(c.entries, f.name)
			}
			c.Counters.Evicted.Add(1)
			c.Log.Debug().Str("file", f.name).Int64("bytes", f.size).Msg("origin: evicted (max_size)")
		}
		el = next
	}
	if c.used+c.reserved+n > limit {
		return fmt.Errorf("%w: %d more bytes with %d cached (%d in use by fetches) over %d", ErrTooLarge, n, c.used, c.reserved, limit)
	}
	c.reserved += n
	return nil
}

// release gives back reserved bytes; c.mu is held.
func (c *Cache) release(n int64) { c.reserved -= n }

// fly runs one fetch in its own goroutine, so a requester that gives up
// (a TFTP client that timed out) does not cancel it for the others.
func (c *Cache) fly(name string, f *flight, cached *entry) {
	now := time.Now()
	next, err := c.fetch(name, cached)
	c.mu.Lock()
	switch {
	case err == nil:
		c.forgetFailure(name) // a failure, if any, is superseded
		c.entries[name] = next
		c.touch(name)
	case errors.Is(err, filestore.ErrNotFound):
		c.rememberFailure(name, err, now)
	case cached != nil && !errors.Is(err, filestore.ErrAccess):
		// The origin failed; the copy we have was verified when fetched.
		c.Counters.Stale.Add(1)
		cached.Checked = now
		c.Log.Warn().Str("file", name).Err(err).Dur("for", c.ttl()).Msg("origin: revalidation failed, serving the cached copy")
		err = nil
	default:
		c.rememberFailure(name, err, now) // replaces a cached entry too
	}
	delete(c.flights, name)
	c.mu.Unlock()
	f.err = err
	close(f.done)
}

// fileURL is the origin URL of name, each element escaped.
func (c *Cache) fileURL(name string) string {
	elems := strings.Split(name, "/")
	for i, e := range elems {
		elems[i] = url.PathEscape(e)
	}
	return strings.TrimSuffix(c.URL.String(), "/") + "/" + strings.Join(elems, "/")
}

// fetch asks the origin for name (conditionally when cached is set) and
// on 200 installs the verified body. It returns the new entry.
func (c *Cache) fetch(name string, cached *entry) (*entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout())
	defer cancel()
	src := c.fileURL(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	if cached != nil {
		if cached.ETag != "" {
			req.Header.Set("If-None-Match", cached.ETag)
		}
		if cached.LastModified != "" {
			req.Header.Set("If-Modified-Since", cached.LastModified)
		}
	}
	c.Counters.Fetches.Add(1)
	start := time.Now()
	resp, err := c.Client.Do(req)
	if err != nil {
		if errors.Is(err, errDirectory) {
			return nil, errDirectory
		}
		return nil, c.refused(name, fmt.Errorf("origin: GET %s: %w", src, err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && cached != nil:
		c.Counters.NotModified.Add(1)
		next := *cached
		next.Checked = time.Now()
		c.saveMeta(name, &next)
		return &next, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		c.forget(name)
		return nil, fmt.Errorf("origin: %s: %s: %w", name, resp.Status, filestore.ErrNotFound)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("origin: %s: %w", resp.Status, filestore.ErrAccess)
	case resp.StatusCode != http.StatusOK:
		return nil, c.refused(name, fmt.Errorf("origin: GET %s: %s", src, resp.Status))
	}
	next := &entry{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Size: resp.ContentLength,
		NoStore: strings.Contains(strings.ToLower(resp.Header.Get("Cache-Control")), "no-store")}
	n, err := c.install(name, resp, next)
	if err != nil {
		return nil, c.refused(name, err)
	}
	next.Size, next.Checked = n, time.Now()
	c.saveMeta(name, next)
	d := time.Since(start)
	c.Log.Info().Str("file", name).Str("origin", src).Int64("bytes", n).Str("etag", next.ETag).
		Dur("duration", d).Float64("mbps", float64(n)/max(d.Seconds(), 1e-9)/1e6).Msg("origin: fetched")
	return next, nil
}

func (c *Cache) refused(name string, err error) error {
	c.Counters.Refused.Add(1)
	c.Log.Warn().Str("file", name).Err(err).Msg("origin: fetch refused, nothing cached")
	return err
}

// md5ETag recognises an S3-style ETag: the quoted hex MD5 of the body
// (multipart uploads have a "-N" suffix and are not an MD5 of the body).
func md5ETag(etag string) ([]byte, bool) {
	if len(etag) != 34 || etag[0] != '"' || etag[33] != '"' {
		return nil, false
	}
	sum, err := hex.DecodeString(etag[1:33])
	return sum, err == nil
}

// install writes the body to tmp/, verifies it, fsyncs it and renames it
// to files/name; on any failure the temp file is removed. The bytes are
// reserved under MaxSize before they are written (all at once when the
// origin announces a length, else as they come).
func (c *Cache) install(name string, resp *http.Response, e *entry) (int64, error) {
	if resp.ContentLength > c.maxSize() {
		return 0, fmt.Errorf("%w: %s is %d bytes, max_size %d", ErrTooLarge, name, resp.ContentLength, c.maxSize())
	}
	res := &reservation{c: c, name: name}
	defer res.done()
	if resp.ContentLength > 0 {
		if err := res.grow(resp.ContentLength); err != nil {
			return 0, err
		}
	}
	// The temp file lives in tmp/, outside what is served.
	dst := path.Join(filesDir, name)
	f, err := atomicfile.CreateIn(c.root, dst, path.Join(tmpDir, "*"), 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Abort()
	var w io.Writer = &reservingWriter{w: f, r: res}
	var sum hash.Hash
	want, hasMD5 := md5ETag(e.ETag)
	if hasMD5 {
		sum = md5.New()
		w = io.MultiWriter(w, sum)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("origin: %s: body cut after %d bytes: %w", name, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("origin: %s: got %d bytes, Content-Length says %d", name, n, resp.ContentLength)
	}
	if hasMD5 && !bytes.Equal(sum.Sum(nil), want) {
		return n, fmt.Errorf("origin: %s: MD5 %x does not match ETag %s", name, sum.Sum(nil), e.ETag)
	}
	if t, err := http.ParseTime(e.LastModified); err == nil {
		// The origin's time: every rack's mirror then sends the same
		// Last-Modified (and ETag, which is built from size and mtime).
		c.root.Chtimes(f.TempName(), t, t)
	}
	if err := c.root.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return n, err
	}
	// The old copy's bytes, if any, are given back as the new one appears.
	err = f.CommitUnder(&c.mu, func() { c.setFile(name, n) })
	if err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return n, err
	}
	return n, nil
}

// reservation is the cache space one fetch holds while it writes.
type reservation struct {
	c    *Cache
	name string
	have int64
}

func (r *reservation) grow(n int64) error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if err := r.c.makeRoom(n, r.name); err != nil {
		return err
	}
	r.have += n
	return nil
}

// done gives the reservation back: on success the file itself is now
// counted (setFile), on failure nothing is.
func (r *reservation) done() {
	r.c.mu.Lock()
	r.c.release(r.have)
	r.c.mu.Unlock()
	r.have = 0
}

// reservingWriter reserves cache space before each write that would
// exceed what its reservation holds.
type reservingWriter struct {
	w       io.Writer
	r       *reservation
	written int64
}

func (w *reservingWriter) Write(p []byte) (int, error) {
	if need := w.written + int64(len(p)) - w.r.have; need > 0 {
		if err := w.r.grow(max(need, reserveChunk)); err != nil {
			return 0, err
		}
	}
	n, err := w.w.Write(p)
	w.written += int64(n)
	return n, err
}

// forget removes name's cached copy and validators (the origin dropped it).
func (c *Cache) forget(name string) {
	c.root.Remove(path.Join(filesDir, name))
	c.root.Remove(path.Join(metaDir, name+".json"))
	c.mu.Lock()
	c.dropFile(name)
	c.mu.Unlock()
}

// loadMeta reads name's validators from meta/ after a restart; nil when
// there are none or the cached file does not match them. c.mu is held.
func (c *Cache) loadMeta(name string) *entry {
	b, err := c.root.ReadFile(path.Join(metaDir, name+".json"))
	if err != nil {
		return nil
	}
	var e entry
	if json.Unmarshal(b, &e) != nil {
		return nil
	}
	st, err := c.root.Stat(path.Join(filesDir, name))
	if err != nil || !st.Mode().IsRegular() || st.Size() != e.Size {
		return nil
	}
	return &e
}

// saveMeta records name's validators (atomically: a crash leaves the old
// record or the new one). A lost record only costs a full fetch.
func (c *Cache) saveMeta(name string, e *entry) {
	b, _ := json.Marshal(e)
	dst := path.Join(metaDir, name+".json")
	if err := c.root.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return
	}
	atomicfile.WriteIn(c.root, dst, path.Join(tmpDir, "*"), b, 0o644)
}
