// Package mirror serves install trees, images and kickstart files over
// HTTP, so `inst.repo=` / `inst.ks=` URLs and iPXE scripts can point at
// mtftpd itself. Range and conditional requests come from the standard
// library's ServeContent (which uses sendfile); names go through the same
// root jail as TFTP.
//
// It never writes, and never serves anything outside its root: symlinks
// leaving the root, devices and FIFOs are refused.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
	"github.com/mtftpd/mtftpd/internal/origin"
	"github.com/mtftpd/mtftpd/internal/udpio"
)

// Counters count requests by fate.
type Counters struct {
	Requests  atomic.Uint64
	NotFound  atomic.Uint64
	Denied    atomic.Uint64
	Listings  atomic.Uint64
	BytesSent atomic.Uint64
	// Rendered counts templates served; TemplateErrors those that failed
	// (500, logged with the template's name and line).
	Rendered       atomic.Uint64
	TemplateErrors atomic.Uint64
	// OriginErrors counts 502s: the upstream origin failed (logged by
	// internal/origin).
	OriginErrors atomic.Uint64
	// RangesIgnored counts requests whose Range header asked for more
	// than MaxRanges ranges, or overlapping ones: they got the whole file.
	RangesIgnored atomic.Uint64
	// PagesRefused counts requests for Pages refused by PagesAllow or
	// the Host check.
	PagesRefused atomic.Uint64
	// ConnsRefused counts connections refused (503) because their
	// address had MaxConnsPerIP busy ones; ConnsShed idle connections
	// closed to make room (per address or at MaxConns).
	ConnsRefused atomic.Uint64
	ConnsShed    atomic.Uint64
}

// Server is the HTTP mirror. Set Root before use.
type Server struct {
	// Root is the directory served read-only.
	Root string
	// Log receives one line per request at debug level and failures at
	// warn level.
	Log      zerolog.Logger
	Counters Counters

	// Source, if set, fills Root before a file is opened: Root is then the
	// cache of an upstream origin (internal/origin). Directory listings
	// show what is cached.
	Source filestore.Source

	// Templates, if set, serve per-host files in front of Root.
	Templates *Templates

	// MaxConns caps concurrent connections (0 = DefaultMaxConns), so
	// clients that stop reading cannot use up the process's descriptors,
	// which TFTP and DHCP share. At the cap a new connection replaces
	// the oldest idle one (limit.go).
	MaxConns int
	// MaxConnsPerIP caps the connections of one client address (0 =
	// DefaultMaxConnsPerIP): past it, that address's oldest idle
	// connection is closed, or the new one refused with 503.
	MaxConnsPerIP int

	// Pages, if set, serves mtftpd's own pages: /metrics, /api/… and
	// /status/…, and "/" redirects to /status/ (pages.go). Files of the
	// root under those names are then not served.
	Pages http.Handler
	// PagesAllow, if not empty, are the client prefixes that may read
	// Pages; others get 403. Files are served to everyone regardless.
	PagesAllow []netip.Prefix
	// PagesHosts are the names, besides IP addresses and "localhost",
	// that a request for Pages may carry in its Host header; any other
	// gets 403 (DNS rebinding, pages.go).
	PagesHosts []string

	// Uploads, if set, takes PUT requests (image capture: imaging.Server,
	// which checks its own token); without it PUT is refused like any
	// other method but GET and HEAD.
	Uploads http.Handler

	// Imaging, if set, serves every path under /imaging/ (the deploy
	// agent's task and report endpoints: imaging.Manager.AgentHandler),
	// to every client like the files; files of the root under that name
	// are then not served over HTTP.
	Imaging http.Handler

	root *os.Root
	mu   sync.Mutex
	srv  *http.Server

	codes statusCodes // responses by status code (pages.go)
}

// DefaultMaxConns is the connection cap: a room of installers pulling
// packages over keep-alive connections needs a few per machine.
const DefaultMaxConns = 2048

// DefaultMaxConnsPerIP is the per-address cap: an installer opens a few
// connections (dnf: 3 parallel downloads by default, 20 at most), a
// browser six; 64 leaves room for a NAT in front of a few machines.
const DefaultMaxConnsPerIP = 64

// slowClientTimeout bounds how long one write may block: a client that
// stops reading for this long is dropped. Each successful write moves the
// deadline on, so big downloads at any real speed are unaffected.
const slowClientTimeout = time.Minute

// Open prepares the root; ListenAndServe and Handler call it as needed.
func (s *Server) Open() error {
	if s.root != nil {
		return nil
	}
	r, err := os.OpenRoot(s.Root)
	if err != nil {
		return fmt.Errorf("mirror: %w", err)
	}
	s.root = r
	return nil
}

// listenNetwork is the network a listener on addr opens: "tcp4" for an
// IPv4 address, "tcp" (dual-stack) for [::], "tcp6" for another IPv6
// address (udpio.Network); Go's own choice for ":80" or a host name.
func listenNetwork(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "tcp"
	}
	return udpio.Network("tcp", ap.Addr())
}

// ListenAndServe serves on addr until ctx is cancelled or Shutdown.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen(listenNetwork(addr), addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is cancelled or Shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.Open(); err != nil {
		ln.Close()
		return err
	}
	max, perIP := s.MaxConns, s.MaxConnsPerIP
	if max <= 0 {
		max = DefaultMaxConns
	}
	if perIP <= 0 {
		perIP = DefaultMaxConnsPerIP
	}
	lim := newConnLimiter(ln, max, min(perIP, max), &s.Counters)
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState:         lim.connState,
	}
	s.mu.Lock()
	if s.srv != nil {
		s.mu.Unlock()
		ln.Close()
		return errors.New("mirror: Serve called twice")
	}
	s.srv = srv
	s.mu.Unlock()
	s.Log.Info().Str("addr", ln.Addr().String()).Str("root", s.Root).Msg("http mirror listening")
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(lim)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for running requests
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	if srv == nil {
		// Not serving yet: make a later Serve return at once.
		s.srv = &http.Server{}
		s.srv.Close()
	}
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.Counters.Requests.Add(1)
	// Served files are data, never pages: no MIME sniffing into HTML.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if s.Imaging != nil && strings.HasPrefix(r.URL.Path, "/imaging/") {
		s.Imaging.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodPut && s.Uploads != nil {
		s.Uploads.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if s.Templates != nil && s.serveTemplate(w, r) {
		return
	}
	if s.root == nil {
		if err := s.Open(); err != nil {
			http.Error(w, "mirror root unavailable", http.StatusInternalServerError)
			return
		}
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	isDir := name == "" || strings.HasSuffix(name, "/")
	if name != "" {
		clean, err := filestore.CleanName(name)
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		name = clean
	} else {
		name = "."
	}
	if s.Source != nil && !isDir {
		if err := s.Source.Ensure(name); err != nil {
			s.originError(w, r, err)
			return
		}
	}
	f, err := s.open(name)
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	if st.IsDir() {
		if !isDir {
			// Relative links in the listing need the trailing slash. The
			// target is relative too: "//host"-style paths must not turn
			// into a redirect to another host.
			// (http.Redirect would make it absolute again.)
			w.Header().Set("Location", "./"+(&url.URL{Path: path.Base(name) + "/"}).EscapedPath())
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		s.list(w, r, f)
		return
	}
	if !st.Mode().IsRegular() {
		s.refuse(w, r, filestore.ErrAccess)
		return
	}
	s.serveFile(w, r, f, st)
}

// originError answers a request whose file the origin cache could not
// provide (Source.Ensure's err).
func (s *Server) originError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, filestore.ErrNotFound) || errors.Is(err, filestore.ErrAccess):
		s.refuse(w, r, err)
	case errors.Is(err, origin.ErrWait):
		// The fetch goes on; a retry soon finds the file.
		s.Counters.OriginErrors.Add(1)
		w.Header().Set("Retry-After", "10")
		http.Error(w, "origin fetch still running, retry", http.StatusGatewayTimeout)
	case errors.Is(err, origin.ErrBusy):
		s.Counters.OriginErrors.Add(1)
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many origin fetches at once, retry", http.StatusServiceUnavailable)
	default:
		// The origin failed or sent a short body; nothing was cached, and
		// the next request after origin.negative_ttl tries again.
		s.Counters.OriginErrors.Add(1)
		http.Error(w, "origin fetch failed", http.StatusBadGateway)
	}
}

// serveFile serves the regular file f (st is its stat) with ranges and
// conditional requests, and counts and logs what it sent.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, f *os.File, st fs.FileInfo) {
	// A strong validator from what identifies the file version (the same
	// things filestore keys on): If-None-Match and If-Range work with it.
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano()))
	if h := r.Header.Get("Range"); h != "" && !rangesAcceptable(h, st.Size()) {
		// Too many or overlapping ranges: the whole file (ranges.go).
		r.Header.Del("Range")
		s.Counters.RangesIgnored.Add(1)
	}
	cw := &countingWriter{ResponseWriter: w, rc: http.NewResponseController(w)}
	http.ServeContent(cw, r, st.Name(), st.ModTime(), f)
	s.Counters.BytesSent.Add(uint64(cw.n))
	s.Log.Debug().Str("client", r.RemoteAddr).Str("path", r.URL.Path).Int("status", cw.status()).
		Int64("bytes", cw.n).Str("range", r.Header.Get("Range")).Msg("http")
}

// open opens name inside the root without blocking on FIFOs and without
// touching devices.
func (s *Server) open(name string) (*os.File, error) {
	if st, err := s.root.Lstat(name); err == nil && st.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
		return nil, filestore.ErrAccess
	}
	return s.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusForbidden
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, filestore.ErrNotFound), errors.Is(err, syscall.ENOTDIR):
		status = http.StatusNotFound
		s.Counters.NotFound.Add(1)
	default:
		s.Counters.Denied.Add(1)
		s.Log.Info().Str("client", r.RemoteAddr).Str("path", r.URL.Path).Err(err).Msg("http: refused")
	}
	http.Error(w, http.StatusText(status), status)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, dir *os.File) {
	s.Counters.Listings.Add(1)
	ents, err := dir.ReadDir(-1)
	if err != nil {
		http.Error(w, "cannot list directory", http.StatusInternalServerError)
		return
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	p := html.EscapeString(path.Clean("/" + r.URL.Path))
	fmt.Fprintf(w, "<!doctype html>\n<meta name=viewport content=\"width=device-width\">\n<title>Index of %s</title>\n<h1>Index of %s</h1>\n<pre>\n", p, p)
	if p != "/" {
		fmt.Fprintln(w, `<a href="../">../</a>`)
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			// Hidden, not forbidden: .treeinfo and .discinfo are fetched by
			// name by installers, but editor and VCS droppings (.git,
			// .swp) are nobody's business in a listing.
			continue
		}
		if e.IsDir() {
			n += "/"
		}
		size := ""
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			size = fmt.Sprintf("%d", info.Size())
		}
		// "./" keeps a name like "javascript:x" a relative path.
		fmt.Fprintf(w, "<a href=\"./%s\">%s</a> %s\n", html.EscapeString((&url.URL{Path: n}).EscapedPath()), html.EscapeString(n), size)
	}
	fmt.Fprintln(w, "</pre>")
}

// countingWriter counts body bytes and remembers the status for the log.
type countingWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	n    int64
	code int
}

// extend moves the write deadline on before each write (slowClientTimeout).
func (c *countingWriter) extend() {
	if c.rc != nil {
		c.rc.SetWriteDeadline(time.Now().Add(slowClientTimeout))
	}
}

func (c *countingWriter) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.extend()
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}

// ReadFrom keeps sendfile: ServeContent copies with io.CopyN, which uses
// the ResponseWriter's ReaderFrom (sendfile for an *os.File) when the
// writer has one; without this method the wrapper would hide it.
// net.TCPConn finds the *os.File under at most one io.LimitedReader, and
// io.CopyN already added one: the slices below cut that limit rather than
// wrap it again, or every byte would go through user space.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	src, limit := r, int64(math.MaxInt64)
	lr, limited := r.(*io.LimitedReader)
	if limited {
		src, limit = lr.R, lr.N
	}
	// sendfile in slices, so the deadline moves with the progress.
	const slice = 4 << 20
	var total int64
	for limit > 0 {
		c.extend()
		want := min(limit, slice)
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: want})
		total += n
		c.n += n
		limit -= n
		if limited {
			lr.N -= n
		}
		if err != nil || n < want {
			return total, err
		}
	}
	return total, nil
}
