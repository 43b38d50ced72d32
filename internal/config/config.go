// Package config holds mtftpd's one configuration file (TOML) and its
// command-line flags, validated in one place. Precedence: documented
// defaults, then the file, then flags. Every field has a flag.
//
// It never opens sockets or files other than the config file itself.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"
)

// Duration is a time.Duration written as "1s", "250ms" in the file.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (like 500ms, 2s, 1h): %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Config is the whole file. The `flag` tag names the command-line flag,
// `help` documents it; Defaults gives every value.
type Config struct {
	TFTP  TFTP  `toml:"tftp"`
	MTFTP MTFTP `toml:"mtftp"`
	HTTP  HTTP  `toml:"http"`
	DHCP  DHCP  `toml:"dhcp"`
	Log   Log   `toml:"log"`

	Server    Process   `toml:"server"`
	Templates Templates `toml:"templates"`
	Origin    Origin    `toml:"origin"`
	Imaging   Imaging   `toml:"imaging"`
}

// DHCP configures the DHCP server or ProxyDHCP. The subnet, host and boot
// tables have no flags: they live in the file (documented in README.md).
type DHCP struct {
	Mode       string       `toml:"mode" help:"off, server (addresses + boot) or proxy (boot only, beside another DHCP server)"`
	Listen     string       `toml:"listen" help:"UDP address of the DHCP socket (port 67 needs root or CAP_NET_BIND_SERVICE)"`
	ProxyPort  int          `toml:"proxy_port" help:"PXE boot-server port of proxy mode"`
	Interfaces []string     `toml:"interfaces" help:"interfaces to serve, comma-separated; empty serves all"`
	TFTPServer string       `toml:"tftp_server" help:"next-server (siaddr); empty = the address of the receiving interface"`
	HTTPBase   string       `toml:"http_base" help:"mirror URL for boot rules ({{.HTTP}}); empty = http://<receiving interface>:<http.listen port>"`
	LeaseFile  string       `toml:"lease_file" help:"lease journal (docs/dhcp-leases.md; a JSON lease file is migrated); empty keeps leases in memory"`
	MaxPerMAC  int          `toml:"max_leases_per_mac" help:"clients (distinct client ids) that may hold addresses under one MAC at once"`
	Relays     []string     `toml:"relays" help:"DHCP relay agents (addresses or prefixes, comma-separated) whose relayed requests are answered: giaddr and the source must both be listed; empty answers no relayed request"`
	Subnets    []DHCPSubnet `toml:"subnet"`
	Hosts      []DHCPHost   `toml:"host"`
	Boot       []BootRule   `toml:"boot"`
}

// DHCPSubnet is one [[dhcp.subnet]].
type DHCPSubnet struct {
	Prefix    string   `toml:"prefix"`     // "192.0.2.0/24"
	Range     string   `toml:"range"`      // "192.0.2.100-192.0.2.199"
	Router    string   `toml:"router"`     // option 3
	DNS       []string `toml:"dns"`        // option 6
	Domain    string   `toml:"domain"`     // option 15
	LeaseTime Duration `toml:"lease_time"` // option 51; 0 = 1h
}

// DHCPHost is one [[dhcp.host]]: a static lease and per-host boot data.
type DHCPHost struct {
	MAC      string            `toml:"mac"`
	IP       string            `toml:"ip"`
	Hostname string            `toml:"hostname"`
	BootFile string            `toml:"boot_file"`
	Vars     map[string]string `toml:"vars"`
}

// BootRule is one [[dhcp.boot]]; the first rule that matches a client
// decides its boot file. Without any, the built-in rules apply (BIOS →
// undionly.kpxe, UEFI → ipxe.efi, iPXE → {{.HTTP}}/boot.ipxe, …).
type BootRule struct {
	Name       string   `toml:"name"`
	Arch       []uint16 `toml:"arch"`        // option 93 values
	IPXE       *bool    `toml:"ipxe"`        // match iPXE (true) or not (false); absent = either
	HTTPClient *bool    `toml:"http_client"` // match UEFI HTTP Boot clients
	UserClass  string   `toml:"user_class"`
	File       string   `toml:"file"` // TFTP name or http(s):// URL; templates {{.HTTP}} {{.MAC}} {{.IP}} …
}

// HTTP configures the HTTP mirror (install trees, kickstart files, iPXE
// scripts).
type HTTP struct {
	Listen        string `toml:"listen" help:"TCP address of the HTTP mirror; empty disables it"`
	Root          string `toml:"root" help:"directory served over HTTP; empty serves tftp.root"`
	MaxConns      int    `toml:"max_conns" help:"HTTP connections at once; at the cap a new one replaces the oldest idle one"`
	MaxConnsPerIP int    `toml:"max_conns_per_ip" help:"HTTP connections at once from one client address; past it its oldest idle one is closed, or the new one gets 503"`
	// The status pages (/metrics, /api/, /status/) show MACs and host
	// names: these restrict who reads them (docs/security.md).
	APIAllow []string `toml:"api_allow" help:"client addresses or prefixes that may read /metrics, /api/ and /status/, comma-separated (e.g. 127.0.0.1,192.0.2.0/24); empty = everyone"`
	APIHosts []string `toml:"api_hosts" help:"names the status pages may be asked for by (Host header) besides IP addresses and localhost, comma-separated; others get 403 (DNS rebinding)"`
}

// Templates configures per-host files rendered for the asking machine,
// served over HTTP and TFTP in front of the roots.
type Templates struct {
	Dir string `toml:"dir" help:"directory of per-host templates (e.g. ks/{mac}.cfg, pxelinux.cfg/01-{mac}); empty disables them"`
}

// Origin configures the cache used when tftp.root or http.root is an
// http(s):// URL: files are fetched from there once, verified, kept in
// CacheDir and served from it (docs/scale.md).
type Origin struct {
	CacheDir string   `toml:"cache_dir" help:"where files from an http(s):// tftp.root or http.root are kept (required with such a root)"`
	TTL      Duration `toml:"ttl" help:"a cached file older than this is revalidated with the origin (conditional GET) before it is served; 0 = every request"`
	Timeout  Duration `toml:"timeout" help:"time limit of one fetch from the origin"`
	// Bounds against clients that pick the names (docs/security.md).
	MaxSize     int64    `toml:"max_size" help:"bytes of cached files; past it the least recently used are removed, and a bigger file is refused; 0 = no cap"`
	NegativeTTL Duration `toml:"negative_ttl" help:"a failed fetch (404 or any error) is answered from memory this long before the origin is asked again; 0 = never remembered"`
	Wait        Duration `toml:"wait" help:"a request waits this long for a running fetch, then gets an error (HTTP 504) while the fetch goes on"`
}

// IsURL reports whether a root is an upstream origin (http:// or https://)
// rather than a directory.
func IsURL(root string) bool {
	return strings.HasPrefix(root, "http://") || strings.HasPrefix(root, "https://")
}

// TFTP configures the unicast TFTP server.
type TFTP struct {
	Listen         string   `toml:"listen" help:"UDP address to listen on (port 69 needs root or CAP_NET_BIND_SERVICE)"`
	Root           string   `toml:"root" help:"directory served read-only"`
	WriteDir       string   `toml:"write_dir" help:"directory that accepts uploads (WRQ); empty refuses them"`
	AllowOverwrite bool     `toml:"allow_overwrite" help:"let an upload replace an existing file"`
	MaxUploadSize  int64    `toml:"max_upload_size" help:"largest upload in bytes"`
	WriteQuota     int64    `toml:"write_quota" help:"most bytes write_dir may hold, its files and running uploads together; 0 = no quota"`
	MaxBlockSize   int      `toml:"max_blksize" help:"largest blksize granted (8..65464), further capped at the interface MTU - 32"`
	AllowFragments bool     `toml:"allow_fragments" help:"grant blksize above the interface MTU - 32 (IP fragments; risky on lossy links)"`
	MaxWindow      int      `toml:"max_windowsize" help:"largest windowsize granted (1..65535)"`
	MaxWindowBytes int      `toml:"max_window_bytes" help:"largest window in bytes (windowsize x blksize)"`
	InitialRTO     Duration `toml:"initial_rto" help:"retransmission timeout before a round trip is measured"`
	MinRTO         Duration `toml:"min_rto" help:"floor of the adaptive retransmission timeout"`
	MaxRTO         Duration `toml:"max_rto" help:"ceiling of the retransmission timeout with backoff"`
	Retries        int      `toml:"retries" help:"consecutive timeouts before a transfer is dropped"`
	StallTimeout   Duration `toml:"stall_timeout" help:"silence tolerated from a client that has answered before, on top of retries"`
	MaxSessions    int      `toml:"max_sessions" help:"transfers at once (confirmed: the client has answered)"`
	MaxPerClient   int      `toml:"max_per_client" help:"transfers at once per client address (confirmed)"`

	// Requests whose client has not answered yet (unconfirmed: the
	// source may be spoofed) have a pool of their own.
	MaxUnconfirmed          int      `toml:"max_unconfirmed" help:"requests whose client has not answered yet, at once; when full the oldest is dropped"`
	MaxUnconfirmedPerPrefix int      `toml:"max_unconfirmed_per_prefix" help:"of those, from one /24 (IPv4) or /64; when full that subnet's oldest is dropped"`
	ConfirmTimeout          Duration `toml:"confirm_timeout" help:"how long a request may wait for its client's first answer (ACK or DATA)"`

	MaxRequestRate int      `toml:"max_requests_per_sec" help:"requests per second from one client address (TFTP and PXE MTFTP ports, each counted apart) before they go unanswered; 0 = unlimited"`
	RequestBurst   int      `toml:"request_burst" help:"requests one client address may send at once before max_requests_per_sec applies; 0 = twice the rate"`
	Lifetime       Duration `toml:"session_lifetime" help:"hard time limit of one transfer"`
	ShutdownGrace  Duration `toml:"shutdown_grace" help:"on SIGTERM, how long running transfers may finish"`
}

// MTFTP configures the multicast dialects: RFC 2090 (the TFTP "multicast"
// option, on the TFTP port) and PXE MTFTP (its own port).
type MTFTP struct {
	Enabled       bool   `toml:"enabled" help:"serve RFC 2090 multicast requests by multicast (off: such requests get unicast)"`
	GroupRange    string `toml:"group_range" help:"RFC 2090 multicast group pool, inside 239.255.0.0/16"`
	Port          int    `toml:"port" help:"UDP port RFC 2090 DATA is sent to"`
	Interface     string `toml:"interface" help:"interface multicast leaves by; empty = the one the request came in on"`
	TTL           int    `toml:"ttl" help:"multicast TTL (1 = the local link)"`
	PXEListen     string `toml:"pxe_listen" help:"UDP address of the PXE MTFTP server (iPXE asks on port 1759); empty disables PXE MTFTP"`
	PXEGroup      string `toml:"pxe_group" help:"PXE MTFTP multicast group (iPXE listens on 239.255.1.1)"`
	PXEClientPort int    `toml:"pxe_client_port" help:"PXE MTFTP client port DATA is sent to (iPXE: 3001)"`
	// The native dialect (mtftpd get --multicast) is served whenever
	// enabled is true; these tune its stream.
	NativeRateMbps int `toml:"native_rate_mbps" help:"cap of a native multicast stream in Mbit/s; 0 = discover it from the receivers' loss"`
	// When a new native session starts streaming (docs/native-multicast.md,
	// "Starting a session"); [[mtftp.start]] sets it per file.
	NativeSettle       Duration    `toml:"native_settle" help:"a new native multicast session starts once no receiver has joined for this long"`
	NativeMaxWait      Duration    `toml:"native_max_wait" help:"...and at the latest this long after it began, however many joined"`
	NativeMinReceivers int         `toml:"native_min_receivers" help:"start as soon as this many receivers joined (0 = wait for native_settle)"`
	Start              []StartRule `toml:"start"`
	// PXE MTFTP per-file groups, announced by DHCP to BIOS PXE ROMs.
	PXEFileGroups string `toml:"pxe_file_groups" help:"groups a boot file announced in DHCP option 43.1 gets one of, inside 239.255.0.0/16 (pxe_group is skipped)"`
	PXEFilePort   int    `toml:"pxe_file_port" help:"client port (43.2) of the first per-file group; the n-th gets pxe_file_port+n"`
	PXEPortOrder  string `toml:"pxe_port_order" help:"byte order of the ports in DHCP option 43.2/43.3: be (network order) or le (Intel sample code); unverified on real ROMs"`
	PXETmout      int    `toml:"pxe_tmout" help:"DHCP option 43.4: seconds a PXE client listens before it opens a pass (1..255)"`
	PXEDelay      int    `toml:"pxe_delay" help:"DHCP option 43.5: PXE client re-open delay in seconds (1..255)"`
}

// StartRule is one [[mtftp.start]]: the start policy of the native
// sessions of the files whose name matches Files (a glob like
// "images/*.img"); the first matching rule wins, and keys left out take
// the [mtftp] values.
type StartRule struct {
	Files        string   `toml:"files"`
	MinReceivers int      `toml:"min_receivers"`
	MaxWait      Duration `toml:"max_wait"`
	Settle       Duration `toml:"settle"`
}

// Process holds settings of the server process itself.
type Process struct {
	User  string `toml:"user" help:"after opening its ports, run as this user (name or uid); empty keeps the starting user"`
	Group string `toml:"group" help:"group to run as after opening the ports; empty = the user's primary group"`
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level" help:"debug, info, warn or error"`
	Format string `toml:"format" help:"console (human) or json"`
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		TFTP: TFTP{
			Listen:         "0.0.0.0:69",
			Root:           "/srv/tftp",
			MaxUploadSize:  1 << 30,
			WriteQuota:     4 << 30, // tftp.DefaultWriteQuota
			MaxBlockSize:   65464,
			MaxWindow:      64,
			MaxWindowBytes: 4 << 20,
			InitialRTO:     Duration{time.Second},
			MinRTO:         Duration{50 * time.Millisecond},
			MaxRTO:         Duration{8 * time.Second},
			Retries:        6,
			StallTimeout:   Duration{30 * time.Second},
			MaxSessions:    1024,
			MaxPerClient:   16,
			MaxRequestRate: 100,
			RequestBurst:   200,
			Lifetime:       Duration{time.Hour},
			ShutdownGrace:  Duration{30 * time.Second},

			// tftp.DefaultMaxUnconfirmed, …PerPrefix, DefaultConfirmTimeout
			MaxUnconfirmed:          256,
			MaxUnconfirmedPerPrefix: 64,
			ConfirmTimeout:          Duration{5 * time.Second},
		},
		MTFTP: MTFTP{
			Enabled: true, GroupRange: "239.255.0.0/24", Port: 1758, TTL: 1,
			PXEGroup: "239.255.1.1", PXEClientPort: 3001,
			NativeSettle: Duration{time.Second}, NativeMaxWait: Duration{5 * time.Second},
			PXEFileGroups: "239.255.1.0/24", PXEFilePort: 3002, PXEPortOrder: "be", PXETmout: 2, PXEDelay: 2,
		},
		HTTP: HTTP{MaxConns: 2048, MaxConnsPerIP: 64},
		DHCP: DHCP{Mode: "off", Listen: "0.0.0.0:67", ProxyPort: 4011, MaxPerMAC: 4},
		Origin: Origin{TTL: Duration{5 * time.Minute}, Timeout: Duration{10 * time.Minute},
			MaxSize: 16 << 30, NegativeTTL: Duration{10 * time.Second}, Wait: Duration{30 * time.Second}},
		Imaging: Imaging{MaxImageSize: 256 << 30, MaxUnknown: 256},
		Log:     Log{Level: "info", Format: "console"},
	}
}

// Load reads a TOML file over the defaults. Unknown keys are errors (a
// typo must not silently fall back to a default).
func Load(path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return Parse(b, c)
}

// Parse decodes TOML text over c.
func Parse(b []byte, c *Config) error {
	md, err := toml.Decode(string(b), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("config: %s", describe(pe))
		}
		return fmt.Errorf("config: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config: unknown field(s): %s", strings.Join(keys, ", "))
	}
	return nil
}

// describe renders a TOML syntax error with the offending line. The
// library's ErrorWithPosition panics on some inputs (a lone `"\` — found
// by FuzzParse, kept in testdata as a regression case): fall back to the
// plain message and line number rather than crash on a bad file.
func describe(pe toml.ParseError) (msg string) {
	defer func() {
		if recover() != nil {
			msg = pe.Error() // already "toml: line N: ..."
		}
	}()
	return pe.ErrorWithPosition()
}

// Validate returns every problem, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	t := &c.TFTP
	if t.Listen == "" {
		bad("tftp.listen", "must not be empty")
	} else if _, port, err := splitHostPort(t.Listen); err != nil {
		bad("tftp.listen", "%v", err)
	} else if port < 0 || port > 65535 {
		bad("tftp.listen", "port %d is outside 0..65535", port)
	}
	if t.Root == "" {
		bad("tftp.root", "must not be empty")
	}
	if t.MaxBlockSize < 8 || t.MaxBlockSize > 65464 {
		bad("tftp.max_blksize", "%d is outside 8..65464 (RFC 2348)", t.MaxBlockSize)
	}
	if t.MaxWindow < 1 || t.MaxWindow > 65535 {
		bad("tftp.max_windowsize", "%d is outside 1..65535 (RFC 7440)", t.MaxWindow)
	}
	if t.MaxWindowBytes < 512 {
		bad("tftp.max_window_bytes", "%d is below one 512-byte block", t.MaxWindowBytes)
	}
	if t.MaxUploadSize < 0 {
		bad("tftp.max_upload_size", "%d is negative", t.MaxUploadSize)
	}
	if t.WriteQuota < 0 {
		bad("tftp.write_quota", "%d is negative (0 = no quota)", t.WriteQuota)
	}
	c.validateWriteDir(bad)
	if t.MinRTO.Duration <= 0 {
		bad("tftp.min_rto", "%s must be positive", t.MinRTO)
	}
	if t.MaxRTO.Duration < t.MinRTO.Duration {
		bad("tftp.max_rto", "%s is below min_rto %s", t.MaxRTO, t.MinRTO)
	}
	if t.InitialRTO.Duration < t.MinRTO.Duration || t.InitialRTO.Duration > t.MaxRTO.Duration {
		bad("tftp.initial_rto", "%s is outside min_rto..max_rto (%s..%s)", t.InitialRTO, t.MinRTO, t.MaxRTO)
	}
	if t.Retries < 1 || t.Retries > 100 {
		bad("tftp.retries", "%d is outside 1..100", t.Retries)
	}
	if t.StallTimeout.Duration < 0 {
		bad("tftp.stall_timeout", "%s is negative", t.StallTimeout)
	}
	if t.MaxSessions < 1 {
		bad("tftp.max_sessions", "%d must be at least 1", t.MaxSessions)
	}
	if t.MaxPerClient < 1 {
		bad("tftp.max_per_client", "%d must be at least 1", t.MaxPerClient)
	}
	if t.MaxUnconfirmed < 1 {
		bad("tftp.max_unconfirmed", "%d must be at least 1", t.MaxUnconfirmed)
	}
	if t.MaxUnconfirmedPerPrefix < 1 {
		bad("tftp.max_unconfirmed_per_prefix", "%d must be at least 1", t.MaxUnconfirmedPerPrefix)
	}
	if t.ConfirmTimeout.Duration <= 0 {
		bad("tftp.confirm_timeout", "%s must be positive", t.ConfirmTimeout)
	}
	if t.MaxRequestRate < 0 {
		bad("tftp.max_requests_per_sec", "%d is negative (0 = unlimited)", t.MaxRequestRate)
	}
	if t.RequestBurst < 0 {
		bad("tftp.request_burst", "%d is negative", t.RequestBurst)
	}
	if t.Lifetime.Duration <= 0 {
		bad("tftp.session_lifetime", "%s must be positive", t.Lifetime)
	}
	if t.ShutdownGrace.Duration < 0 {
		bad("tftp.shutdown_grace", "%s is negative", t.ShutdownGrace)
	}
	if c.HTTP.Listen != "" {
		if _, port, err := splitHostPort(c.HTTP.Listen); err != nil {
			bad("http.listen", "%v", err)
		} else if port < 0 || port > 65535 {
			bad("http.listen", "port %d is outside 0..65535", port)
		}
	}
	if c.HTTP.MaxConns < 1 {
		bad("http.max_conns", "%d must be at least 1", c.HTTP.MaxConns)
	}
	if c.HTTP.MaxConnsPerIP < 1 || c.HTTP.MaxConnsPerIP > c.HTTP.MaxConns {
		bad("http.max_conns_per_ip", "%d is outside 1..http.max_conns (%d)", c.HTTP.MaxConnsPerIP, c.HTTP.MaxConns)
	}
	for i, a := range c.HTTP.APIAllow {
		if _, err := ParsePrefix(a); err != nil {
			bad(fmt.Sprintf("http.api_allow[%d]", i), "%v", err)
		}
	}
	for i, h := range c.HTTP.APIHosts {
		if h == "" || strings.ContainsAny(h, ":/[] \t") {
			bad(fmt.Sprintf("http.api_hosts[%d]", i), "%q is not a host name like boot.example.org", h)
		}
	}
	c.validateMTFTP(bad)
	if c.Server.Group != "" && c.Server.User == "" {
		bad("server.group", "%q is set without server.user", c.Server.Group)
	}
	if c.DHCP.MaxPerMAC < 1 {
		bad("dhcp.max_leases_per_mac", "%d must be at least 1", c.DHCP.MaxPerMAC)
	}
	c.validateDHCP(bad)
	c.validateOrigin(bad)
	c.validateImaging(bad)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", "%q is not console or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// validateWriteDir refuses an upload directory that overlaps a served
// tree (either inside the other): an upload named pxelinux.cfg/01-<mac>
// would take over that machine's boot (issue 13, finding 11). Paths are
// compared as written (made absolute) and, where they exist, with their
// symlinks resolved (lstat and readlink only: no file is opened).
func (c *Config) validateWriteDir(bad func(field, format string, args ...any)) {
	w := c.TFTP.WriteDir
	if w == "" {
		return
	}
	served := []struct{ field, dir string }{
		{"tftp.root", c.TFTP.Root}, {"http.root", c.HTTP.Root}, {"templates.dir", c.Templates.Dir},
	}
	if IsURL(c.TFTP.Root) || IsURL(c.HTTP.Root) {
		// Files fetched from an origin are served from the cache.
		served = append(served, struct{ field, dir string }{"origin.cache_dir", c.Origin.CacheDir})
	}
	for _, s := range served {
		if s.dir == "" || IsURL(s.dir) {
			continue
		}
		if overlaps(w, s.dir) {
			bad("tftp.write_dir", "%q overlaps %s %q (one inside the other): an upload could replace a served file", w, s.field, s.dir)
		}
	}
}

// overlaps reports whether directory a is b, or inside it, or contains it.
func overlaps(a, b string) bool {
	forms := func(p string) []string {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil
		}
		out := []string{abs}
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			out = append(out, r)
		}
		return out
	}
	within := func(p, dir string) bool {
		return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
	}
	for _, x := range forms(a) {
		for _, y := range forms(b) {
			if within(x, y) || within(y, x) {
				return true
			}
		}
	}
	return false
}

func (c *Config) validateOrigin(bad func(field, format string, args ...any)) {
	urls := false
	for _, r := range []struct{ field, root string }{{"tftp.root", c.TFTP.Root}, {"http.root", c.HTTP.Root}} {
		if !IsURL(r.root) {
			continue
		}
		urls = true
		if u, err := url.Parse(r.root); err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(r.field, "%q is not an http(s) URL without query like http://origin.example:8080/boot/", r.root)
		}
	}
	o := &c.Origin
	if urls && o.CacheDir == "" {
		bad("origin.cache_dir", "must be set when tftp.root or http.root is an http(s) URL")
	}
	if o.TTL.Duration < 0 {
		bad("origin.ttl", "%s is negative", o.TTL)
	}
	if o.Timeout.Duration <= 0 {
		bad("origin.timeout", "%s must be positive", o.Timeout)
	}
	if o.MaxSize < 0 {
		bad("origin.max_size", "%d is negative (0 = no cap)", o.MaxSize)
	}
	if o.NegativeTTL.Duration < 0 {
		bad("origin.negative_ttl", "%s is negative (0 = failures are not remembered)", o.NegativeTTL)
	}
	if o.Wait.Duration <= 0 {
		bad("origin.wait", "%s must be positive", o.Wait)
	}
}

// mcastScope is the only multicast range mtftpd sends to (RFC 2365
// organisation-local scope).
var mcastScope = netip.MustParsePrefix("239.255.0.0/16")

func (c *Config) validateMTFTP(bad func(field, format string, args ...any)) {
	m := &c.MTFTP
	if p, err := netip.ParsePrefix(m.GroupRange); err != nil || !p.Addr().Is4() {
		bad("mtftp.group_range", "%q is not an IPv4 prefix like 239.255.0.0/24", m.GroupRange)
	} else if p.Bits() < mcastScope.Bits() || !mcastScope.Contains(p.Addr()) {
		bad("mtftp.group_range", "%s is not inside %s", p, mcastScope)
	}
	if m.Port < 1 || m.Port > 65535 {
		bad("mtftp.port", "%d is outside 1..65535", m.Port)
	}
	if m.TTL < 1 || m.TTL > 255 {
		bad("mtftp.ttl", "%d is outside 1..255", m.TTL)
	}
	if m.PXEListen != "" {
		if host, port, err := splitHostPort(m.PXEListen); err != nil {
			bad("mtftp.pxe_listen", "%v", err)
		} else if port < 1 || port > 65535 {
			bad("mtftp.pxe_listen", "port %d is outside 1..65535", port)
		} else if a, err := netip.ParseAddr(host); (host == "" || err != nil || a.IsUnspecified()) && m.Interface == "" {
			// The stream must leave by a known interface, never the
			// routing table's pick (it could be the uplink).
			bad("mtftp.pxe_listen", "%q listens on every address: give an address (e.g. 192.0.2.1:1759) or set mtftp.interface", m.PXEListen)
		}
	}
	if a, err := netip.ParseAddr(m.PXEGroup); err != nil || !mcastScope.Contains(a) {
		bad("mtftp.pxe_group", "%q is not a group inside %s", m.PXEGroup, mcastScope)
	}
	if m.PXEClientPort < 1 || m.PXEClientPort > 65535 {
		bad("mtftp.pxe_client_port", "%d is outside 1..65535", m.PXEClientPort)
	}
	if m.NativeRateMbps < 0 || m.NativeRateMbps > 400000 {
		bad("mtftp.native_rate_mbps", "%d is outside 0..400000", m.NativeRateMbps)
	}
	if m.NativeSettle.Duration < 0 || m.NativeSettle.Duration > time.Hour {
		bad("mtftp.native_settle", "%v is outside 0s..1h", m.NativeSettle.Duration)
	}
	if m.NativeMaxWait.Duration < 0 || m.NativeMaxWait.Duration > time.Hour {
		bad("mtftp.native_max_wait", "%v is outside 0s..1h", m.NativeMaxWait.Duration)
	}
	if m.NativeMinReceivers < 0 || m.NativeMinReceivers > 10000 {
		bad("mtftp.native_min_receivers", "%d is outside 0..10000", m.NativeMinReceivers)
	}
	for i, r := range m.Start {
		key := fmt.Sprintf("mtftp.start[%d]", i)
		if _, err := path.Match(r.Files, ""); err != nil || r.Files == "" {
			bad(key+".files", "%q is not a file name pattern like images/*.img", r.Files)
		}
		if r.MinReceivers < 0 || r.MinReceivers > 10000 {
			bad(key+".min_receivers", "%d is outside 0..10000", r.MinReceivers)
		}
		if r.MaxWait.Duration < 0 || r.MaxWait.Duration > time.Hour {
			bad(key+".max_wait", "%v is outside 0s..1h", r.MaxWait.Duration)
		}
		if r.Settle.Duration < 0 || r.Settle.Duration > time.Hour {
			bad(key+".settle", "%v is outside 0s..1h", r.Settle.Duration)
		}
	}
	if p, err := netip.ParsePrefix(m.PXEFileGroups); err != nil || !p.Addr().Is4() {
		bad("mtftp.pxe_file_groups", "%q is not an IPv4 prefix like 239.255.1.0/24", m.PXEFileGroups)
	} else if p.Bits() < mcastScope.Bits() || !mcastScope.Contains(p.Addr()) {
		bad("mtftp.pxe_file_groups", "%s is not inside %s", p, mcastScope)
	} else if g, err := netip.ParsePrefix(m.GroupRange); err == nil && p.Overlaps(g) {
		bad("mtftp.pxe_file_groups", "%s overlaps mtftp.group_range %s (an RFC 2090 session would share a file's group)", p, g)
	}
	if m.PXEFilePort < 1 || m.PXEFilePort > 65535 {
		bad("mtftp.pxe_file_port", "%d is outside 1..65535", m.PXEFilePort)
	}
	if m.PXEPortOrder != "be" && m.PXEPortOrder != "le" {
		bad("mtftp.pxe_port_order", "%q is not be or le", m.PXEPortOrder)
	}
	if m.PXETmout < 1 || m.PXETmout > 255 {
		bad("mtftp.pxe_tmout", "%d is outside 1..255", m.PXETmout)
	}
	if m.PXEDelay < 1 || m.PXEDelay > 255 {
		bad("mtftp.pxe_delay", "%d is outside 1..255", m.PXEDelay)
	}
}

func (c *Config) validateDHCP(bad func(field, format string, args ...any)) {
	d := &c.DHCP
	switch d.Mode {
	case "off", "server", "proxy":
	default:
		bad("dhcp.mode", "%q is not off, server or proxy", d.Mode)
		return
	}
	// The host table also names machines for the templates, so it is
	// checked in every mode.
	c.validateHosts(bad)
	if d.Mode == "off" {
		return
	}
	if host, port, err := splitHostPort(d.Listen); err != nil {
		bad("dhcp.listen", "%v", err)
	} else if port < 0 || port > 65535 {
		bad("dhcp.listen", "port %d is outside 0..65535", port)
	} else if a, err := netip.ParseAddr(host); host != "" && (err != nil || !a.IsUnspecified()) {
		// Linux never delivers 255.255.255.255 to a socket bound to a
		// unicast address: such a server would never see a DISCOVER.
		bad("dhcp.listen", "%q: DHCP must listen on 0.0.0.0 (use dhcp.interfaces to pick interfaces)", d.Listen)
	}
	for i, r := range d.Relays {
		if p, err := ParsePrefix(r); err != nil {
			bad(fmt.Sprintf("dhcp.relays[%d]", i), "%v", err)
		} else if !p.Addr().Is4() {
			bad(fmt.Sprintf("dhcp.relays[%d]", i), "%q is not IPv4", r)
		}
	}
	if d.ProxyPort < 1 || d.ProxyPort > 65535 {
		bad("dhcp.proxy_port", "%d is outside 1..65535", d.ProxyPort)
	}
	if d.TFTPServer != "" {
		if a, err := netip.ParseAddr(d.TFTPServer); err != nil || !a.Is4() {
			bad("dhcp.tftp_server", "%q is not an IPv4 address", d.TFTPServer)
		}
	}
	if d.HTTPBase != "" {
		if u, err := url.Parse(d.HTTPBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("dhcp.http_base", "%q is not an absolute http(s) URL", d.HTTPBase)
		}
	}
	if d.Mode == "server" && len(d.Subnets) == 0 {
		bad("dhcp.subnet", "server mode needs at least one [[dhcp.subnet]]")
	}
	for i, sn := range d.Subnets {
		f := fmt.Sprintf("dhcp.subnet[%d]", i)
		p, err := netip.ParsePrefix(sn.Prefix)
		if err != nil || !p.Addr().Is4() {
			bad(f+".prefix", "%q is not an IPv4 prefix like 192.0.2.0/24", sn.Prefix)
			continue
		}
		if _, _, err := ParseRange(sn.Range, p); err != nil {
			bad(f+".range", "%v", err)
		}
		if sn.Router != "" {
			if a, err := netip.ParseAddr(sn.Router); err != nil || !p.Contains(a) {
				bad(f+".router", "%q is not an address in %s", sn.Router, p)
			}
		}
		for j, dns := range sn.DNS {
			if a, err := netip.ParseAddr(dns); err != nil || !a.Is4() {
				bad(fmt.Sprintf("%s.dns[%d]", f, j), "%q is not an IPv4 address", dns)
			}
		}
		if sn.LeaseTime.Duration < 0 {
			bad(f+".lease_time", "%s is negative", sn.LeaseTime)
		}
	}
	for i, r := range d.Boot {
		f := fmt.Sprintf("dhcp.boot[%d]", i)
		if _, err := template.New(f).Parse(r.File); err != nil {
			bad(f+".file", "template: %v", err)
		}
	}
}

func (c *Config) validateHosts(bad func(field, format string, args ...any)) {
	seen := map[string]bool{}
	for i, h := range c.DHCP.Hosts {
		f := fmt.Sprintf("dhcp.host[%d]", i)
		mac, err := net.ParseMAC(h.MAC)
		if err != nil || len(mac) != 6 {
			bad(f+".mac", "%q is not an Ethernet MAC like 52:54:00:12:34:56", h.MAC)
		} else if seen[mac.String()] {
			bad(f+".mac", "%s is listed twice", mac)
		} else {
			seen[mac.String()] = true
		}
		if h.IP != "" {
			if a, err := netip.ParseAddr(h.IP); err != nil || !a.Is4() {
				bad(f+".ip", "%q is not an IPv4 address", h.IP)
			}
		}
	}
}

// ParsePrefix parses an address ("192.0.2.1", a /32) or a prefix
// ("192.0.2.0/24").
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix like 192.0.2.1 or 192.0.2.0/24", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParsePrefixes parses a validated list of ParsePrefix values.
func ParsePrefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ParseRange parses "first-last" inside p.
func ParseRange(s string, p netip.Prefix) (netip.Addr, netip.Addr, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a range like 192.0.2.100-192.0.2.199", s)
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return first, last, fmt.Errorf("%q is not a range like 192.0.2.100-192.0.2.199", s)
	case !p.Contains(first) || !p.Contains(last):
		return first, last, fmt.Errorf("%q is not inside %s", s, p)
	case last.Less(first):
		return first, last, fmt.Errorf("%q ends before it starts", s)
	}
	return first, last, nil
}

func splitHostPort(s string) (string, int, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("%q has no port (like 0.0.0.0:69)", s)
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return "", 0, fmt.Errorf("%q: port is not a number", s)
	}
	return s[:i], p, nil
}

// Encode writes c as TOML (for --print-config).
func (c *Config) Encode() ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Flags registers one flag per field ("tftp.max_blksize") on fs. The
// values are applied by the returned function, after the file is loaded,
// so flags win over the file. Only flags given on the command line apply.
// A boolean key given alone (--mtftp.enabled) means true.
func Flags(fs *pflag.FlagSet) func(c *Config) error {
	var set []keyFlag
	def := Defaults()
	walk(reflect.ValueOf(&def).Elem(), "", func(name, help string, v reflect.Value) {
		f := fs.VarPF(&keyFlag{name: name, val: defaultText(v), kind: flagType(v), set: &set}, name, "", help)
		if v.Kind() == reflect.Bool {
			f.NoOptDefVal = "true"
		}
	})
	return func(c *Config) error {
		var errs []error
		for _, s := range set {
			walk(reflect.ValueOf(c).Elem(), "", func(name, _ string, v reflect.Value) {
				if name != s.name {
					return
				}
				if err := setValue(v, s.val); err != nil {
					errs = append(errs, fmt.Errorf("--%s: %w", name, err))
				}
			})
		}
		return errors.Join(errs...)
	}
}

// keyFlag is the pflag.Value of one config key. Set records the text
// only: it is checked when applied, against the field it sets, so a bad
// value is reported with the key's name like a bad value in the file.
type keyFlag struct {
	name string
	val  string // the default, then the last value given
	kind string
	set  *[]keyFlag
}

func (k *keyFlag) String() string { return k.val }

// IsBoolFlag marks a boolean key for pflag's usage text, as its own
// bool flags are marked.
func (k *keyFlag) IsBoolFlag() bool { return k.kind == "bool" }
func (k *keyFlag) Type() string     { return k.kind }
func (k *keyFlag) Set(s string) error {
	k.val = s
	*k.set = append(*k.set, keyFlag{name: k.name, val: s})
	return nil
}

// flagType names a field's value in the usage text (pflag prints it after
// the flag, and omits it for "bool").
func flagType(v reflect.Value) string {
	if _, ok := v.Interface().(Duration); ok {
		return "duration"
	}
	switch v.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Slice:
		return "list"
	case reflect.Int, reflect.Int64:
		return "int"
	}
	return "string"
}

// Changed lists the keys ("section.key", and "dhcp.subnet", "dhcp.host",
// "dhcp.boot", "imaging.task" for the tables) whose values differ between
// a and b, sorted.
func Changed(a, b Config) []string {
	var out []string
	var bv []reflect.Value
	walk(reflect.ValueOf(&b).Elem(), "", func(_, _ string, v reflect.Value) { bv = append(bv, v) })
	i := 0
	walk(reflect.ValueOf(&a).Elem(), "", func(name, _ string, v reflect.Value) {
		if !reflect.DeepEqual(v.Interface(), bv[i].Interface()) {
			out = append(out, name)
		}
		i++
	})
	for name, eq := range map[string]bool{
		"dhcp.subnet":  reflect.DeepEqual(a.DHCP.Subnets, b.DHCP.Subnets),
		"dhcp.host":    reflect.DeepEqual(a.DHCP.Hosts, b.DHCP.Hosts),
		"dhcp.boot":    reflect.DeepEqual(a.DHCP.Boot, b.DHCP.Boot),
		"imaging.task": reflect.DeepEqual(a.Imaging.Tasks, b.Imaging.Tasks),
	} {
		if !eq {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// FieldNames lists every config field as "section.key", sorted.
func FieldNames() []string {
	var out []string
	c := Defaults()
	walk(reflect.ValueOf(&c).Elem(), "", func(name, _ string, _ reflect.Value) { out = append(out, name) })
	sort.Strings(out)
	return out
}

func walk(v reflect.Value, prefix string, fn func(name, help string, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		if prefix != "" {
			name = prefix + "." + name
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration{}) {
			walk(fv, name, fn)
			continue
		}
		// Tables ([[dhcp.subnet]], …) live in the file only.
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() != reflect.String {
			continue
		}
		fn(name, f.Tag.Get("help"), fv)
	}
}

// defaultText is a field's value as its flag would be written
// (pflag quotes it for "string" flags in the usage text).
func defaultText(v reflect.Value) string {
	if d, ok := v.Interface().(Duration); ok {
		return d.String()
	}
	if l, ok := v.Interface().([]string); ok {
		return strings.Join(l, ",")
	}
	return fmt.Sprint(v.Interface())
}

func setValue(v reflect.Value, s string) error {
	if d, ok := v.Addr().Interface().(*Duration); ok {
		return d.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Slice: // []string, comma-separated
		var list []string
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				list = append(list, f)
			}
		}
		v.Set(reflect.ValueOf(list))
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(n)
	default:
		return fmt.Errorf("unsupported field kind %s", v.Kind())
	}
	return nil
}
