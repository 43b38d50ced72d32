package mirror

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
)

// pagePrefixes are the paths Pages serves; files of the root under these
// names are not reachable over HTTP while Pages is set.
var pagePrefixes = []string{"/metrics", "/api/", "/status/"}

// routes is the handler Serve runs: Pages for its paths and "/" (which
// redirects to the status page), the mirror for everything else, and a
// count of every response by status code.
func (s *Server) routes() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w}
		defer func() { s.codes.count(cw.code) }()
		if s.Pages != nil {
			if r.URL.Path == "/" {
				http.Redirect(cw, r, "/status/", http.StatusFound)
				return
			}
			if isPage(r.URL.Path) {
				if why := s.pageRefused(r); why != "" {
					s.Counters.PagesRefused.Add(1)
					http.Error(cw, why, http.StatusForbidden)
					return
				}
				s.Pages.ServeHTTP(cw, r)
				return
			}
		}
		s.ServeHTTP(cw, r)
	})
}

// pageRefused says why r may not read Pages, or "" if it may: its client
// address is outside PagesAllow (when set), or its Host header names
// neither an IP address, "localhost", nor one of PagesHosts. The Host
// check defeats DNS rebinding: a page on attacker.example whose name
// later resolves to this server still sends "Host: attacker.example",
// so a browser on the admin's desk cannot be made to read the MACs and
// host names of /api/transfers for a web page elsewhere.
func (s *Server) pageRefused(r *http.Request) string {
	if len(s.PagesAllow) > 0 {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		// Without its zone: a link-local admin's address carries one
		// ("fe80::1%eth0"), and Prefix.Contains is false for any
		// address with a zone.
		a := ap.Addr().Unmap().WithZone("")
		if err != nil || !slices.ContainsFunc(s.PagesAllow, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return fmt.Sprintf("forbidden: %s is not in http.api_allow", a)
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "" || strings.EqualFold(host, "localhost") {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	for _, h := range s.PagesHosts {
		if strings.EqualFold(host, strings.TrimSuffix(h, ".")) {
			return ""
		}
	}
	return fmt.Sprintf("forbidden: Host %q is not an IP address or a name in http.api_hosts", host)
}

// isPage reports whether path is one of Pages': a prefix itself ("/status"
// too, which Pages redirects to "/status/") or a path below one ending in
// "/" ("/metrics" is one path, "/metricsfoo" a file).
func isPage(path string) bool {
	for _, p := range pagePrefixes {
		if path == strings.TrimSuffix(p, "/") || strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// Responses returns how many responses were sent, by status code, over
// every request Serve handled (mirror and Pages alike).
func (s *Server) Responses() map[int]uint64 { return s.codes.snapshot() }

// statusCodes counts responses by code: one atomic add per request, no
// lock, no map on the request path.
type statusCodes struct{ n [600]atomic.Uint64 }

func (c *statusCodes) count(code int) {
	if code == 0 {
		code = http.StatusOK // nothing written: net/http sends 200
	}
	if code >= 100 && code < len(c.n) {
		c.n[code].Add(1)
	}
}

func (c *statusCodes) snapshot() map[int]uint64 {
	out := map[int]uint64{}
	for code := range c.n {
		if v := c.n[code].Load(); v > 0 {
			out[code] = v
		}
	}
	return out
}

// SortedCodes returns the keys of a Responses map in order.
func SortedCodes(m map[int]uint64) []int {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	return codes
}

// codeWriter remembers a response's status code. It keeps the
// ResponseWriter's ReaderFrom (sendfile for ServeContent) and, through
// Unwrap, what http.ResponseController needs (deadlines, Flush).
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 && code >= 200 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

func (c *codeWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.ResponseWriter}, r)
}

func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
