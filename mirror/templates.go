package mirror

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/rs/zerolog"

	"github.com/mtftpd/mtftpd/internal/filestore"
)

// Templates renders per-host files (kickstart, preseed, autoinstall, iPXE
// scripts, pxelinux and GRUB configs) with text/template, for the machine
// that asks. The tree under Dir is the namespace they are served under,
// over HTTP and over TFTP alike, in front of the file roots: a template
// "ks/{mac}.cfg" answers /ks/52:54:00:12:34:56.cfg (any MAC spelling:
// colons, dashes or twelve hex digits), "pxelinux.cfg/01-{mac}" answers
// pxelinux's first config lookup, and "grub.cfg" answers every machine,
// which is then named by the DHCP lease of the address it asks from.
//
// Templates are read again when they change on disk (checked at most every
// refreshEvery), so an admin edits them without a restart. A file is
// rendered to a buffer first: a failing template gives an error, never a
// half-written file. Templates never write and never read outside Dir.
type Templates struct {
	// Dir holds the templates. Names starting with "." or ending in "~"
	// (editor droppings) are ignored.
	Dir string
	// Hosts are the known machines ([[dhcp.host]]): their host name,
	// address and Vars, by MAC.
	Hosts []Host
	// Leases, if set, names the machine behind a client address when the
	// request carries no MAC.
	Leases Leases
	// HTTPBase is {{.HTTP}} in files served over TFTP; "" means
	// http://<address the request came to>, with HTTPPort unless it is 0
	// or 80. Over HTTP it is the URL the client used.
	HTTPBase string
	HTTPPort int
	// Log receives one line per failed template, naming it and its line.
	Log zerolog.Logger
	// Imaging, if set, decides {{.Imaging}} for a named machine
	// (docs/imaging.md). It is asked only by templates that mention
	// .Imaging: handing out the deploy environment counts an attempt, a
	// kickstart or a GRUB menu rendered for the same machine must not.
	Imaging ImagingDecider

	mu       sync.Mutex
	root     *os.Root
	checked  time.Time
	index    map[string]*tmpl // by name relative to Dir
	patterns []*tmpl          // names with {mac}, most specific first
	byMAC    map[string]*Host
	byIP     map[netip.Addr]*Host
}

// Host is a known machine and its template variables.
type Host struct {
	MAC      net.HardwareAddr
	IP       netip.Addr // zero: no fixed address
	Hostname string
	Vars     map[string]string
}

// Lease is what the DHCP server knows about the machine at an address.
type Lease struct {
	MAC      net.HardwareAddr
	Hostname string
	Arch     string // option 93 in decimal; "" unknown
}

// Leases finds the machine that holds a client address (the DHCP server,
// wired in by cmd/mtftpd). Lookup must be safe for concurrent use.
type Leases interface {
	Lookup(ip netip.Addr) (Lease, bool)
}

// TemplateVars is what a template sees. The names match the DHCP boot
// rules' ({{.HTTP}}, {{.MAC}}, …), so a line can move between them.
type TemplateVars struct {
	HTTP     string // mirror base URL, no trailing slash
	MAC      string // aa:bb:cc:dd:ee:ff; "" when the machine is unknown
	MACDash  string // aa-bb-cc-dd-ee-ff (pxelinux.cfg/01-… style)
	IP       string // the address the request came from
	Hostname string // [[dhcp.host]] hostname, else the lease's
	Arch     string // option 93 in decimal (from the lease or ?arch=); "" unknown
	Vars     map[string]string
	Known    bool   // the MAC is in [[dhcp.host]]
	Proto    string // "http" or "tftp"
	Name     string // the requested name, cleaned
	// Imaging is the machine's boot decision for reimaging; Action is
	// "local" when no task names it (or no MAC names the machine).
	Imaging Imaging
}

// Imaging is {{.Imaging}} (docs/imaging.md, "Template variables").
type Imaging struct {
	Action         string // deploy, capture or local
	Task           string // "" for local
	Kernel, Initrd string // the deploy environment, names under tftp.root
	Cmdline        string // the agent's kernel arguments
	State          string // the machine's state; "" when no task names it
}

// ImagingDecider decides a machine's {{.Imaging}} (the imaging package's
// task manager, wired in by cmd/mtftpd). httpBase is the mirror's URL as
// the machine reached it ({{.HTTP}}), local the server address the
// request came to: the deploy environment is pointed there. It must be
// safe for concurrent use.
type ImagingDecider interface {
	Decide(mac net.HardwareAddr, hostname string, known bool, httpBase string, local netip.Addr) Imaging
}

// refreshEvery bounds how often Dir is walked for changes: pxelinux asks
// for a dozen names per boot, and a room boots at once.
const refreshEvery = 2 * time.Second

// macPlaceholder in a template's file name matches a MAC in the request.
const macPlaceholder = "{mac}"

// errTemplateNotFound is what {{notFound}} returns: the client gets "not
// found" and moves on (pxelinux to its next config name).
var errTemplateNotFound = fmt.Errorf("template called notFound: %w", filestore.ErrNotFound)

var templateFuncs = template.FuncMap{
	"notFound": func() (string, error) { return "", errTemplateNotFound },
	// required fails the render when a variable is empty: better a 500
	// than an installer told to wipe disk "".
	"required": func(what, v string) (string, error) {
		if v == "" {
			return "", fmt.Errorf("%s is required but empty", what)
		}
		return v, nil
	},
}

// tmpl is one template file, parsed.
type tmpl struct {
	name           string
	prefix, suffix string // around {mac}
	hasMAC         bool
	t              *template.Template
	usesImaging    bool  // the source mentions .Imaging
	err            error // parse or read error: every render fails with it
	mod            time.Time
	size           int64
}

// Open opens Dir and reads the templates once; a template that does not
// parse is logged and answers with an error until it is fixed.
func (t *Templates) Open() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.root != nil {
		return nil
	}
	r, err := os.OpenRoot(t.Dir)
	if err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	t.root = r
	t.byMAC = make(map[string]*Host)
	t.byIP = make(map[netip.Addr]*Host)
	for i := range t.Hosts {
		h := &t.Hosts[i]
		t.byMAC[h.MAC.String()] = h
		if h.IP.IsValid() {
			t.byIP[h.IP] = h
		}
	}
	t.refresh(time.Now())
	t.Log.Info().Str("dir", t.Dir).Int("templates", len(t.index)).Int("hosts", len(t.Hosts)).Msg("templates loaded")
	for _, tm := range t.index {
		if tm.err != nil {
			t.logFailure(tm.name, tm.err, nil)
		}
	}
	return nil
}

// Close releases Dir.
func (t *Templates) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.root == nil {
		return nil
	}
	err := t.root.Close()
	t.root = nil
	return err
}

// refresh re-reads the templates that changed; t.mu is held.
func (t *Templates) refresh(now time.Time) {
	t.checked = now
	index := make(map[string]*tmpl, len(t.index))
	fs.WalkDir(t.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable subtree: skip it, serve the rest
		}
		base := d.Name()
		if p != "." && (strings.HasPrefix(base, ".") || strings.HasSuffix(base, "~")) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if old := t.index[p]; old != nil && old.mod.Equal(info.ModTime()) && old.size == info.Size() {
			index[p] = old
			return nil
		}
		index[p] = t.parse(p, info)
		return nil
	})
	t.index = index
	t.patterns = t.patterns[:0]
	for _, tm := range index {
		if tm.hasMAC {
			t.patterns = append(t.patterns, tm)
		}
	}
	sort.Slice(t.patterns, func(i, j int) bool {
		a, b := t.patterns[i], t.patterns[j]
		if la, lb := len(a.prefix)+len(a.suffix), len(b.prefix)+len(b.suffix); la != lb {
			return la > lb
		}
		return a.name < b.name
	})
}

func (t *Templates) parse(name string, info fs.FileInfo) *tmpl {
	tm := &tmpl{name: name, mod: info.ModTime(), size: info.Size()}
	if i := strings.Index(name, macPlaceholder); i >= 0 {
		tm.hasMAC, tm.prefix, tm.suffix = true, name[:i], name[i+len(macPlaceholder):]
	}
	src, err := t.root.ReadFile(name)
	if err != nil {
		tm.err = err
		return tm
	}
	tm.usesImaging = bytes.Contains(src, []byte("Imaging"))
	tm.t, tm.err = template.New(name).Option("missingkey=zero").Funcs(templateFuncs).Parse(string(src))
	return tm
}

// match finds the template serving name (cleaned) and the MAC its file
// name placed in it, if any. Exact names win over {mac} patterns.
func (t *Templates) match(name string) (*tmpl, net.HardwareAddr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.root == nil {
		return nil, nil
	}
	if now := time.Now(); now.Sub(t.checked) >= refreshEvery {
		t.refresh(now)
	}
	if tm := t.index[name]; tm != nil && !tm.hasMAC {
		return tm, nil
	}
	for _, tm := range t.patterns {
		if len(name) < len(tm.prefix)+len(tm.suffix) || !strings.HasPrefix(name, tm.prefix) || !strings.HasSuffix(name, tm.suffix) {
			continue
		}
		if mac, ok := parseMAC(name[len(tm.prefix) : len(name)-len(tm.suffix)]); ok {
			return tm, mac
		}
	}
	return nil, nil
}

// parseMAC reads an Ethernet MAC written aa:bb:cc:dd:ee:ff,
// aa-bb-cc-dd-ee-ff or aabbccddeeff, in either case.
func parseMAC(s string) (net.HardwareAddr, bool) {
	switch len(s) {
	case 12:
	case 17:
		sep := s[2]
		if sep != ':' && sep != '-' {
			return nil, false
		}
		var b strings.Builder
		for i := 0; i < len(s); i += 3 {
			if i > 0 && s[i-1] != sep {
				return nil, false
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	default:
		return nil, false
	}
	mac, err := hex.DecodeString(s)
	if err != nil {
		return nil, false
	}
	return mac, true
}

// renderRequest is one request for a name, from either protocol.
type renderRequest struct {
	name   string
	client netip.Addr
	local  netip.Addr       // the server address the request came to
	mac    net.HardwareAddr // from the request (?mac=), nil otherwise
	arch   string           // from the request (?arch=)
	http   string
	proto  string
}

// errNoTemplate: no template serves the name; the file roots do.
var errNoTemplate = errors.New("no template")

// render renders the template serving r.name into a buffer. It returns
// errNoTemplate when there is none, an error wrapping filestore.ErrNotFound
// when the template said so, and otherwise a template error (logged here
// with the template's name and line).
func (t *Templates) render(r renderRequest) ([]byte, error) {
	name, err := filestore.CleanName(r.name)
	if err != nil {
		return nil, errNoTemplate // the file roots refuse it with the usual error
	}
	tm, mac := t.match(name)
	if tm == nil {
		return nil, errNoTemplate
	}
	v := t.vars(r, name, mac, tm.usesImaging && tm.err == nil)
	err = tm.err
	var buf bytes.Buffer
	if err == nil {
		err = tm.t.Execute(&buf, v)
	}
	if err != nil {
		if !errors.Is(err, filestore.ErrNotFound) {
			t.logFailure(tm.name, err, zerolog.Dict().Str("client", v.IP).Str("mac", v.MAC).Str("proto", r.proto))
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

// vars names the machine: the MAC from the file name, else from the
// request, else from its lease; then what the host table says about it.
func (t *Templates) vars(r renderRequest, name string, mac net.HardwareAddr, imaging bool) TemplateVars {
	v := TemplateVars{HTTP: r.http, Arch: r.arch, Proto: r.proto, Name: name, Imaging: Imaging{Action: "local"}}
	if r.client.IsValid() {
		v.IP = r.client.Unmap().String()
	}
	if mac == nil {
		mac = r.mac
	}
	var lease Lease
	leased := false
	if t.Leases != nil && r.client.IsValid() {
		lease, leased = t.Leases.Lookup(r.client.Unmap())
		if mac == nil && leased {
			mac = lease.MAC
		}
	}
	t.mu.Lock()
	var host *Host
	if mac != nil {
		host = t.byMAC[mac.String()]
	} else if host = t.byIP[r.client.Unmap()]; host != nil {
		mac = host.MAC
	}
	t.mu.Unlock()
	if mac != nil {
		v.MAC = mac.String()
		v.MACDash = strings.ReplaceAll(v.MAC, ":", "-")
	}
	if leased && bytes.Equal(lease.MAC, mac) {
		v.Hostname = lease.Hostname
		if v.Arch == "" {
			v.Arch = lease.Arch
		}
	}
	v.Vars = map[string]string{}
	if host != nil {
		v.Known = true
		v.Vars = host.Vars
		if host.Hostname != "" {
			v.Hostname = host.Hostname
		}
	}
	if imaging && t.Imaging != nil && mac != nil {
		v.Imaging = t.Imaging.Decide(mac, v.Hostname, v.Known, v.HTTP, r.local.Unmap())
	}
	return v
}

// logFailure logs a failed template with its name and, where the error
// says, its line; req (may be nil: at start) describes the request.
func (t *Templates) logFailure(name string, err error, req *zerolog.Event) {
	ev := t.Log.Error().Str("template", name)
	if line := templateLine(name, err); line > 0 {
		ev = ev.Int("line", line)
	}
	if req != nil {
		ev = ev.Dict("request", req)
	}
	ev.Err(err).Msg("template failed")
}

// templateLine extracts the line from text/template's errors, which read
// "template: NAME:LINE: …" (parse) or "template: NAME:LINE:COL: …" (exec).
func templateLine(name string, err error) int {
	_, rest, ok := strings.Cut(err.Error(), "template: "+name+":")
	if !ok {
		return 0
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, _ := strconv.Atoi(rest[:end])
	return n
}

// urlHost is the host part of a URL to a: an IPv6 literal in brackets
// (RFC 3986 §3.2.2) without its zone (an interface name of this host
// means nothing to the client), and the port unless it is 0 or 80.
func urlHost(a netip.Addr, port int) string {
	a = a.Unmap().WithZone("")
	switch {
	case port != 0 && port != 80:
		return netip.AddrPortFrom(a, uint16(port)).String()
	case a.Is6():
		return "[" + a.String() + "]"
	}
	return a.String()
}

// Render renders name for a TFTP client; it implements tftp.VirtualFiles
// (cmd/mtftpd wires it in; tftp knows nothing of templates). ok is false
// when no template serves name.
func (t *Templates) Render(name string, client netip.AddrPort, local netip.Addr) ([]byte, bool, error) {
	base := t.HTTPBase
	if base == "" && local.IsValid() {
		base = "http://" + urlHost(local, t.HTTPPort)
	}
	data, err := t.render(renderRequest{name: name, client: client.Addr(), local: local, http: strings.TrimSuffix(base, "/"), proto: "tftp"})
	if errors.Is(err, errNoTemplate) {
		return nil, false, nil
	}
	return data, true, err
}

// serveTemplate answers r if a template serves its path and reports
// whether it did. ?mac= and ?arch= name the machine for templates without
// {mac} in their name (iPXE: boot.ipxe?mac=${net0/mac}).
func (s *Server) serveTemplate(w http.ResponseWriter, r *http.Request) bool {
	rr := renderRequest{name: strings.TrimPrefix(r.URL.Path, "/"), proto: "http", arch: r.URL.Query().Get("arch")}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		rr.client = ap.Addr()
	}
	if m, ok := parseMAC(r.URL.Query().Get("mac")); ok {
		rr.mac = m
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			rr.local = ap.Addr()
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	rr.http = scheme + "://" + r.Host
	data, err := s.Templates.render(rr)
	switch {
	case errors.Is(err, errNoTemplate):
		return false
	case errors.Is(err, filestore.ErrNotFound):
		s.Counters.NotFound.Add(1)
		http.Error(w, http.StatusText(http.StatusNotFound), http.StatusNotFound)
		return true
	case err != nil:
		s.Counters.TemplateErrors.Add(1)
		http.Error(w, "template error (see the server log)", http.StatusInternalServerError)
		return true
	}
	s.Counters.Rendered.Add(1)
	ctype := mime.TypeByExtension(path.Ext(r.URL.Path))
	if ctype == "" {
		ctype = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ctype)
	// Rendered per machine: a cache between here and the client must not
	// hand one host's kickstart to another.
	w.Header().Set("Cache-Control", "no-store")
	cw := &countingWriter{ResponseWriter: w, rc: http.NewResponseController(w)}
	http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(data))
	s.Counters.BytesSent.Add(uint64(cw.n))
	return true
}
