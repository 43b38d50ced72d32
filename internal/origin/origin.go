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
// The package never writes outside Dir, never leaves a partial file under
// a name that is served, and never serves a file it has not verified.
package origin

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
)

// Defaults for zero Cache fields.
const (
	DefaultTTL     = 5 * time.Minute
	DefaultTimeout = 10 * time.Minute
	// missingTTL is how long a 404 from the origin is believed: pxelinux
	// probes a dozen config names per boot (01-<mac>, hex IPs, default)
	// and a room boots at once; without it every probe is an origin hit.
	missingTTL = 10 * time.Second
)

// maxMissing caps the remembered 404s: clients choose the names they ask
// for, and random ones must not grow the table without bound. A variable
// so the test can lower it.
var maxMissing = 4096

// Counters count what the cache did; read them at any time.
type Counters struct {
	Hits        atomic.Uint64 // served from the cache without asking the origin
	Fetches     atomic.Uint64 // GETs sent to the origin (one per flight)
	Joined      atomic.Uint64 // requests that waited on a fetch already running
	NotModified atomic.Uint64 // revalidations answered 304
	Refused     atomic.Uint64 // fetches refused: short body, MD5 mismatch, bad status
	Stale       atomic.Uint64 // cached copies served because the origin failed
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
	// Client makes the requests; nil = a client with Timeout.
	Client *http.Client
	Log    zerolog.Logger

	Counters Counters

	root    *os.Root
	mu      sync.Mutex
	entries map[string]*entry
	flights map[string]*flight
	missing int // entries with missing set
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
	missing bool // the origin said 404 at Checked
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

// Open prepares Dir and clears temp files a crash left behind.
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
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.timeout(), CheckRedirect: refuseDirectoryRedirect}
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

func (c *Cache) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

func (c *Cache) ttl() time.Duration {
	if c.TTL == 0 {
		return DefaultTTL
	}
	return c.TTL
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
// filestore.ErrAccess (it refuses, or it is a directory); anything else
// is a failed fetch, and the next call tries again.
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
		c.mu.Unlock()
		if e.missing {
			return fmt.Errorf("origin: %w", filestore.ErrNotFound)
		}
		c.Counters.Hits.Add(1)
		return nil
	}
	f := c.flights[name]
	if f != nil {
		c.Counters.Joined.Add(1)
	} else {
		f = &flight{done: make(chan struct{})}
		c.flights[name] = f
		var cached *entry
		if e != nil && !e.missing {
			cached = e
		}
		go c.fly(name, f, cached)
	}
	c.mu.Unlock()
	<-f.done
	return f.err
}

// rememberMissing records a 404 for name; c.mu is held. At the cap it
// first drops the 404s that have expired, and if none have (a flood of
// new names within missingTTL), it remembers nothing.
func (c *Cache) rememberMissing(name string, now time.Time) {
	if old := c.entries[name]; old != nil && old.missing {
		old.Checked = now
		return
	}
	if c.missing >= maxMissing {
		for n, e := range c.entries {
			if e.missing && !c.fresh(e, now) {
				delete(c.entries, n)
				c.missing--
			}
		}
		if c.missing >= maxMissing {
			delete(c.entries, name)
			return
		}
	}
	c.entries[name] = &entry{Checked: now, missing: true}
	c.missing++
}

func (c *Cache) fresh(e *entry, now time.Time) bool {
	if e.missing {
		return now.Sub(e.Checked) < min(missingTTL, max(c.ttl(), 0))
	}
	return !e.NoStore && now.Sub(e.Checked) < c.ttl()
}

// fly runs one fetch in its own goroutine, so a requester that gives up
// (a TFTP client that timed out) does not cancel it for the others.
func (c *Cache) fly(name string, f *flight, cached *entry) {
	now := time.Now()
	next, err := c.fetch(name, cached)
	c.mu.Lock()
	if old := c.entries[name]; old != nil && old.missing && !errors.Is(err, filestore.ErrNotFound) {
		delete(c.entries, name) // the 404 is superseded
		c.missing--
	}
	switch {
	case err == nil:
		c.entries[name] = next
	case errors.Is(err, filestore.ErrNotFound):
		c.rememberMissing(name, now)
	case cached != nil && !errors.Is(err, filestore.ErrAccess):
		// The origin failed; the copy we have was verified when fetched.
		c.Counters.Stale.Add(1)
		cached.Checked = now
		c.Log.Warn().Str("file", name).Err(err).Dur("for", c.ttl()).Msg("origin: revalidation failed, serving the cached copy")
		err = nil
	default:
		delete(c.entries, name)
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
		return nil, fmt.Errorf("origin: %s: %w", resp.Status, filestore.ErrNotFound)
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
// to files/name; on any failure the temp file is removed.
func (c *Cache) install(name string, resp *http.Response, e *entry) (int64, error) {
	tmp := tempName()
	f, err := c.root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			c.root.Remove(tmp)
		}
	}()
	var w io.Writer = f
	var sum hash.Hash
	want, hasMD5 := md5ETag(e.ETag)
	if hasMD5 {
		sum = md5.New()
		w = io.MultiWriter(f, sum)
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
	if err := f.Sync(); err != nil {
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, err
	}
	if t, err := http.ParseTime(e.LastModified); err == nil {
		// The origin's time: every rack's mirror then sends the same
		// Last-Modified (and ETag, which is built from size and mtime).
		c.root.Chtimes(tmp, t, t)
	}
	dst := path.Join(filesDir, name)
	if err := c.root.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return n, err
	}
	if err := c.root.Rename(tmp, dst); err != nil {
		return n, err
	}
	ok = true
	c.syncDir(path.Dir(dst))
	return n, nil
}

// tempName is a fresh name in tmp/, outside what is served.
func tempName() string {
	var rnd [8]byte
	rand.Read(rnd[:])
	return path.Join(tmpDir, hex.EncodeToString(rnd[:]))
}

func (c *Cache) syncDir(dir string) {
	if d, err := c.root.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// forget removes name's cached copy and validators (the origin dropped it).
func (c *Cache) forget(name string) {
	c.root.Remove(path.Join(filesDir, name))
	c.root.Remove(path.Join(metaDir, name+".json"))
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

// saveMeta records name's validators (temp + rename: a crash leaves the
// old record or the new one). A lost record only costs a full fetch.
func (c *Cache) saveMeta(name string, e *entry) {
	b, _ := json.Marshal(e)
	dst := path.Join(metaDir, name+".json")
	tmp := tempName()
	if err := c.root.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return
	}
	if err := c.root.WriteFile(tmp, b, 0o644); err != nil {
		return
	}
	if err := c.root.Rename(tmp, dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.root.Remove(tmp)
	}
}
