// Package config holds mtftpd's one configuration file (TOML) and its
// command-line flags, validated in one place. Precedence: documented
// defaults, then the file, then flags. Every field has a flag.
//
// It never opens sockets or files other than the config file itself.
package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
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
	DHCP6 DHCP6 `toml:"dhcp6"`
	Log   Log   `toml:"log"`

	Server    Process   `toml:"server"`
	Templates Templates `toml:"templates"`
	Origin    Origin    `toml:"origin"`
	Imaging   Imaging   `toml:"imaging"`
}

// DHCP configures the DHCP server or ProxyDHCP. The subnet, host and boot
// tables have no flags: they live in the file (documented in README.md).
type DHCP struct {
	Mode       string         `toml:"mode" help:"off, server (addresses + boot) or proxy (boot only, beside another DHCP server)"`
	Listen     netip.AddrPort `toml:"listen" help:"UDP address of the DHCP socket, 0.0.0.0:port (port 67 needs root or CAP_NET_BIND_SERVICE)"`
	ProxyPort  int            `toml:"proxy_port" help:"PXE boot-server port of proxy mode"`
	Interfaces []string       `toml:"interfaces" help:"interfaces to serve, comma-separated; empty serves all"`
	TFTPServer netip.Addr     `toml:"tftp_server" help:"next-server (siaddr), an IPv4 address; empty = the address of the receiving interface"`
	HTTPBase   string         `toml:"http_base" help:"mirror URL for boot rules ({{.HTTP}}); empty = http://<receiving interface>:<http.listen port>"`
	LeaseFile  string         `toml:"lease_file" help:"lease journal (docs/dhcp-leases.md; a JSON lease file is migrated); empty keeps leases in memory"`
	MaxPerMAC  int            `toml:"max_leases_per_mac" reload:"yes" help:"clients (distinct client ids) that may hold addresses under one MAC at once"`
	RouterAdv  string         `toml:"router_advert" help:"auto: answer IPv6 router solicitations on the DHCP interfaces with 'no IPv6 here' (M=0, O=0, lifetime 0, no prefix) where no other router advertises, so iPXE does not wait for IPv6; off: never"`
	Relays     []Net          `toml:"relays" help:"DHCP relay agents (addresses or prefixes, comma-separated) whose relayed requests are answered: giaddr and the source must both be listed; empty answers no relayed request"`
	Subnets    []DHCPSubnet   `toml:"subnet"`
	Hosts      []DHCPHost     `toml:"host"`
	Boot       []BootRule     `toml:"boot" reload:"yes"`
}

// DHCP6 configures the DHCPv6 server (docs/protocols.md §14): addresses
// from one range on the boot link and the boot file URL (option 59),
// chosen by the [[dhcp.boot]] rules, which serve both families.
type DHCP6 struct {
	Enabled     bool           `toml:"enabled" help:"serve DHCPv6 (addresses and boot URLs) on dhcp6.interfaces"`
	Listen      netip.AddrPort `toml:"listen" help:"UDP address of the DHCPv6 socket, [::]:port (port 547 needs root or CAP_NET_BIND_SERVICE)"`
	Interfaces  []string       `toml:"interfaces" help:"interfaces to serve, comma-separated (at least one): the socket joins ff02::1:2 on each, and with dhcp.router_advert = auto the router advertisement there says M=1 with dhcp6.prefix"`
	Prefix      netip.Prefix   `toml:"prefix" help:"the boot link's IPv6 prefix, like 2001:db8:1::/64: advertised on-link; the server needs an address in it on each interface (the host of the boot URLs)"`
	Range       Range          `toml:"range" help:"the address pool inside dhcp6.prefix, like 2001:db8:1::100-2001:db8:1::1ff (the upper 96 bits shared, at most 16777216 addresses)"`
	LeaseTime   Duration       `toml:"lease_time" help:"valid and preferred lifetime of an address; T1 and T2 are 1/2 and 4/5 of it"`
	DNS         []netip.Addr   `toml:"dns" help:"DNS servers (option 23) for clients that ask, comma-separated"`
	TFTPServer  netip.Addr     `toml:"tftp_server" help:"host of tftp:// boot URLs, an IPv6 address; empty = the server's address in dhcp6.prefix on the receiving interface"`
	HTTPBase    string         `toml:"http_base" help:"mirror URL for boot rules ({{.HTTP}}); empty = http://[address in dhcp6.prefix]:<http.listen port>"`
	DefaultArch int            `toml:"default_arch" help:"architecture (option 61 value: 7 x64 UEFI, 11 ARM64 UEFI) assumed for a netboot client that sends neither option 61 nor a PXEClient:Arch vendor class; -1 = none (such a client is not answered)"`
	RapidCommit bool           `toml:"rapid_commit" help:"answer a Solicit with Rapid Commit by a Reply at once (two messages instead of four)"`
	MaxPerDUID  int            `toml:"max_leases_per_duid" help:"IAs (IAIDs) that may hold addresses under one DUID at once"`
	RequestRate int            `toml:"request_rate" help:"DHCPv6 messages a second one source address may send (twice that at once); 0 = no limit"`
	LeaseFile   string         `toml:"lease_file" help:"DHCPv6 lease journal (docs/dhcp-leases.md), not dhcp.lease_file; empty keeps leases in memory"`
}

// DHCPSubnet is one [[dhcp.subnet]].
type DHCPSubnet struct {
	Prefix    netip.Prefix `toml:"prefix"`     // "192.0.2.0/24"
	Range     Range        `toml:"range"`      // "192.0.2.100-192.0.2.199"
	Router    netip.Addr   `toml:"router"`     // option 3
	DNS       []netip.Addr `toml:"dns"`        // option 6
	Domain    string       `toml:"domain"`     // option 15
	LeaseTime Duration     `toml:"lease_time"` // option 51; 0 = 1h
}

// DHCPHost is one [[dhcp.host]]: a static lease and per-host boot data.
type DHCPHost struct {
	MAC      MAC               `toml:"mac"`
	IP       netip.Addr        `toml:"ip"`
	Hostname string            `toml:"hostname"`
	BootFile string            `toml:"boot_file"`
	Vars     map[string]string `toml:"vars"`
}

// BootRule is one [[dhcp.boot]]; the first rule that matches a client
// decides its boot file. Without any, the built-in rules apply (BIOS →
// undionly.kpxe, UEFI → ipxe.efi, iPXE → {{.HTTP}}/boot.ipxe, …).
type BootRule struct {
	Name       string   `toml:"name"`
	Arch       ArchList `toml:"arch"`        // option 93 values, numbers or names ("uefi-arm64")
	IPXE       *bool    `toml:"ipxe"`        // match iPXE (true) or not (false); absent = either
	HTTPClient *bool    `toml:"http_client"` // match UEFI HTTP Boot clients
	UserClass  string   `toml:"user_class"`
	File       string   `toml:"file"` // TFTP name or http(s):// URL; templates {{.HTTP}} {{.MAC}} {{.IP}} …
}

// HTTP configures the HTTP mirror (install trees, kickstart files, iPXE
// scripts).
type HTTP struct {
	Listen        netip.AddrPort `toml:"listen" help:"TCP address of the HTTP mirror (like 0.0.0.0:80, IPv4 only, or [::]:80, IPv6 and IPv4); empty disables it"`
	Root          string         `toml:"root" help:"directory served over HTTP; empty serves tftp.root"`
	MaxConns      int            `toml:"max_conns" help:"HTTP connections at once; at the cap a new one replaces the oldest idle one"`
	MaxConnsPerIP int            `toml:"max_conns_per_ip" help:"HTTP connections at once from one client address; past it its oldest idle one is closed, or the new one gets 503"`
	// The status pages (/metrics, /api/, /status/) show MACs and host
	// names: these restrict who reads them (docs/security.md).
	APIAllow []Net    `toml:"api_allow" help:"client addresses or prefixes that may read /metrics, /api/ and /status/, comma-separated (e.g. 127.0.0.1,192.0.2.0/24); empty = everyone"`
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
	Listen         netip.AddrPort `toml:"listen" help:"UDP address to listen on: an IPv4 address (IPv4 only), [::] (IPv6 and IPv4, one dual-stack socket) or an IPv6 address, and a port (69 needs root or CAP_NET_BIND_SERVICE)"`
	Root           string         `toml:"root" help:"directory served read-only"`
	WriteDir       string         `toml:"write_dir" help:"directory that accepts uploads (WRQ); empty refuses them"`
	SinglePort     bool           `toml:"single_port" help:"serve every read transfer from the listening port, in one event loop per core (docs/design.md, Single-port mode); false: a port and goroutine per transfer"`
	AllowOverwrite bool           `toml:"allow_overwrite" reload:"yes" help:"let an upload replace an existing file"`
	MaxUploadSize  int64          `toml:"max_upload_size" reload:"yes" help:"largest upload in bytes"`
	WriteQuota     int64          `toml:"write_quota" reload:"yes" help:"most bytes write_dir may hold, its files and running uploads together; 0 = no quota"`
	MaxBlockSize   int            `toml:"max_blksize" reload:"yes" help:"largest blksize granted (8..65464), further capped at the interface MTU - 32"`
	AllowFragments bool           `toml:"allow_fragments" reload:"yes" help:"grant blksize above the interface MTU - 32 (IP fragments; risky on lossy links)"`
	MaxWindow      int            `toml:"max_windowsize" reload:"yes" help:"largest windowsize granted (1..65535)"`
	MaxWindowBytes int            `toml:"max_window_bytes" reload:"yes" help:"largest window in bytes (windowsize x blksize)"`
	InitialRTO     Duration       `toml:"initial_rto" reload:"yes" help:"retransmission timeout before a round trip is measured"`
	MinRTO         Duration       `toml:"min_rto" reload:"yes" help:"absolute floor of the adaptive retransmission timeout (above it the floor follows twice the largest recent round trip)"`
	MaxRTO         Duration       `toml:"max_rto" reload:"yes" help:"ceiling of the retransmission timeout with backoff"`
	Retries        int            `toml:"retries" reload:"yes" help:"consecutive timeouts before a transfer is dropped"`
	StallTimeout   Duration       `toml:"stall_timeout" reload:"yes" help:"silence tolerated from a client that has answered before, on top of retries"`
	MaxSessions    int            `toml:"max_sessions" reload:"yes" help:"transfers at once (confirmed: the client has answered)"`
	MaxPerClient   int            `toml:"max_per_client" reload:"yes" help:"transfers at once per client address (confirmed)"`

	// Requests whose client has not answered yet (unconfirmed: the
	// source may be spoofed) have a pool of their own.
	MaxUnconfirmed          int      `toml:"max_unconfirmed" reload:"yes" help:"requests whose client has not answered yet, at once; when full the oldest is dropped"`
	MaxUnconfirmedPerPrefix int      `toml:"max_unconfirmed_per_prefix" reload:"yes" help:"of those, from one /24 (IPv4) or /64; when full that subnet's oldest is dropped"`
	ConfirmTimeout          Duration `toml:"confirm_timeout" reload:"yes" help:"how long a request may wait for its client's first answer (ACK or DATA)"`

	MaxRequestRate int      `toml:"max_requests_per_sec" reload:"yes" help:"requests per second from one client address (TFTP and PXE MTFTP ports, each counted apart) before they go unanswered; 0 = unlimited"`
	RequestBurst   int      `toml:"request_burst" reload:"yes" help:"requests one client address may send at once before max_requests_per_sec applies; 0 = twice the rate"`
	Lifetime       Duration `toml:"session_lifetime" reload:"yes" help:"hard time limit of one transfer"`
	ShutdownGrace  Duration `toml:"shutdown_grace" reload:"yes" help:"on SIGTERM, how long running transfers may finish"`
}

// MTFTP configures the multicast dialects: RFC 2090 (the TFTP "multicast"
// option, on the TFTP port) and PXE MTFTP (its own port).
type MTFTP struct {
	Enabled       bool           `toml:"enabled" help:"serve RFC 2090 multicast requests by multicast (off: such requests get unicast; IPv6 clients always do)"`
	GroupRange    netip.Prefix   `toml:"group_range" help:"RFC 2090 multicast group pool, inside 239.255.0.0/16"`
	Port          int            `toml:"port" help:"UDP port RFC 2090 DATA is sent to"`
	Interface     string         `toml:"interface" help:"interface multicast leaves by; empty = the one the request came in on"`
	TTL           int            `toml:"ttl" help:"multicast TTL (1 = the local link)"`
	PXEListen     netip.AddrPort `toml:"pxe_listen" help:"UDP address of the PXE MTFTP server (iPXE asks on port 1759); empty disables PXE MTFTP"`
	PXEGroup      netip.Addr     `toml:"pxe_group" help:"PXE MTFTP multicast group (iPXE listens on 239.255.1.1)"`
	PXEClientPort int            `toml:"pxe_client_port" help:"PXE MTFTP client port DATA is sent to (iPXE: 3001)"`
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
	PXEFileGroups netip.Prefix `toml:"pxe_file_groups" help:"groups a boot file announced in DHCP option 43.1 gets one of, inside 239.255.0.0/16 (pxe_group is skipped)"`
	PXEFilePort   int          `toml:"pxe_file_port" help:"client port (43.2) of the first per-file group; the n-th gets pxe_file_port+n"`
	PXEPortOrder  string       `toml:"pxe_port_order" help:"byte order of the ports in DHCP option 43.2/43.3: be (network order) or le (Intel sample code); unverified on real ROMs"`
	PXETmout      int          `toml:"pxe_tmout" help:"DHCP option 43.4: seconds a PXE client listens before it opens a pass (1..255)"`
	PXEDelay      int          `toml:"pxe_delay" help:"DHCP option 43.5: PXE client re-open delay in seconds (1..255)"`
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
	Level  string `toml:"level" reload:"yes" help:"debug, info, warn or error"`
	Format string `toml:"format" help:"console (human) or json"`
}

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		TFTP: TFTP{
			Listen:         netip.MustParseAddrPort("0.0.0.0:69"),
			Root:           "/srv/tftp",
			MaxUploadSize:  1 << 30,
			WriteQuota:     4 << 30, // tftp.DefaultWriteQuota
			MaxBlockSize:   65464,
			MaxWindow:      64,
			MaxWindowBytes: 4 << 20,
			InitialRTO:     Duration{time.Second},
			MinRTO:         Duration{20 * time.Millisecond}, // tftp.DefaultMinRTO
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
			Enabled: true, GroupRange: netip.MustParsePrefix("239.255.0.0/24"), Port: 1758, TTL: 1,
			PXEGroup: netip.MustParseAddr("239.255.1.1"), PXEClientPort: 3001,
			NativeSettle: Duration{time.Second}, NativeMaxWait: Duration{5 * time.Second},
			PXEFileGroups: netip.MustParsePrefix("239.255.1.0/24"), PXEFilePort: 3002, PXEPortOrder: "be", PXETmout: 2, PXEDelay: 2,
		},
		HTTP: HTTP{MaxConns: 2048, MaxConnsPerIP: 64},
		DHCP: DHCP{Mode: "off", Listen: netip.MustParseAddrPort("0.0.0.0:67"), ProxyPort: 4011, MaxPerMAC: 4, RouterAdv: "auto"},
		DHCP6: DHCP6{Listen: netip.MustParseAddrPort("[::]:547"), LeaseTime: Duration{time.Hour}, DefaultArch: -1,
			MaxPerDUID: 4, RequestRate: 10},
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
			if verr := valueError(string(b), pe); verr != nil {
				return verr
			}
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
	switch v.Interface().(type) {
	case Duration:
		return "duration"
	case netip.AddrPort:
		return "addr:port"
	case netip.Addr:
		return "addr"
	case netip.Prefix:
		return "prefix"
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
	walkKeys(reflect.ValueOf(&b).Elem(), "", true, func(_ string, _ reflect.StructField, v reflect.Value) { bv = append(bv, v) })
	i := 0
	walkKeys(reflect.ValueOf(&a).Elem(), "", true, func(name string, _ reflect.StructField, v reflect.Value) {
		if !reflect.DeepEqual(v.Interface(), bv[i].Interface()) {
			out = append(out, name)
		}
		i++
	})
	sort.Strings(out)
	return out
}

// NeedRestart lists the keys of changed (from Changed) that a running
// server cannot take on: every key but those tagged reload:"yes".
func NeedRestart(changed []string) []string {
	live := map[string]bool{}
	c := Defaults()
	walkKeys(reflect.ValueOf(&c).Elem(), "", true, func(name string, f reflect.StructField, _ reflect.Value) {
		live[name] = f.Tag.Get("reload") == "yes"
	})
	var out []string
	for _, k := range changed {
		if !live[k] {
			out = append(out, k)
		}
	}
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

// walk calls fn for every key that has a flag: the tables are left out.
func walk(v reflect.Value, prefix string, fn func(name, help string, v reflect.Value)) {
	walkKeys(v, prefix, false, func(name string, f reflect.StructField, v reflect.Value) { fn(name, f.Tag.Get("help"), v) })
}

// walkKeys calls fn for every key under v: the leaves (values, lists of
// values) and, with tables, each table array ([[dhcp.subnet]], …) as one
// key.
func walkKeys(v reflect.Value, prefix string, tables bool, fn func(name string, f reflect.StructField, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		if prefix != "" {
			name = prefix + "." + name
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && !isText(f.Type) {
			walkKeys(fv, name, tables, fn)
			continue
		}
		if table := f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && !isText(f.Type.Elem()); table && !tables {
			continue // tables live in the file only
		}
		fn(name, f, fv)
	}
}

// defaultText is a field's value as its flag would be written
// (pflag quotes it for "string" flags in the usage text).
func defaultText(v reflect.Value) string {
	if v.Kind() == reflect.Slice && v.Type() != reflect.TypeFor[MAC]() {
		var list []string
		for i := range v.Len() {
			list = append(list, defaultText(v.Index(i)))
		}
		return strings.Join(list, ",")
	}
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, _ := m.MarshalText()
		return string(b)
	}
	return fmt.Sprint(v.Interface())
}

func setValue(v reflect.Value, s string) error {
	if isText(v.Type()) {
		return decodeText(v, s)
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
	case reflect.Slice: // comma-separated
		list := reflect.MakeSlice(v.Type(), 0, 0)
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			list = reflect.Append(list, reflect.Zero(v.Type().Elem()))
			if err := setValue(list.Index(list.Len()-1), f); err != nil {
				return err
			}
		}
		if list.Len() == 0 {
			list = reflect.Zero(v.Type()) // nil, as a list absent from the file
		}
		v.Set(list)
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
