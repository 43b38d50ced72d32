package dhcp

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Option codes this package reads or writes (RFC 2132, 3004, 3046, 4578;
// docs/protocols.md §8.2). The option map is keyed by plain uint8.
const (
	optSubnetMask    = 1
	optRouter        = 3
	optDNS           = 6
	optHostName      = 12
	optDomainName    = 15
	optVendorSpecif  = 43
	optRequestedIP   = 50
	optLeaseTime     = 51
	optMessageType   = 53
	optServerID      = 54
	optParamRequest  = 55
	optMaxMsgSize    = 57
	optRenewalTime   = 58
	optRebindingTime = 59
	optVendorClass   = 60
	optClientID      = 61
	optTFTPServer    = 66
	optBootFile      = 67
	optUserClass     = 77
	optRelayAgent    = 82
	optClientArch    = 93
	optClientNDI     = 94
	optClientUUID    = 97
	optIPXEEncap     = 175

	// ipxeNoPXEDHCP is iPXE's sub-option 176 of 175: ignore ProxyDHCP
	// (docs/protocols.md §13.2).
	ipxeNoPXEDHCP = 176
)

// Vendor class prefixes (docs/protocols.md §9.1, §9.8).
const (
	vendorPXE  = "PXEClient"
	vendorHTTP = "HTTPClient"
)

// BootRule maps a class of netboot client to a boot file. Rules are tried
// in order and the first match wins; an empty match field matches
// anything.
//
// Chain-load loops (docs/protocols.md §9.9): iPXE sends the same vendor class
// and architecture as the firmware that loaded it. A rule that hands out
// an iPXE binary must therefore set IPXE to false, and an earlier rule must
// give iPXE clients something else (a script URL), or the client loads
// iPXE forever. DefaultBootRules does both; custom rules must too.
type BootRule struct {
	Name string
	// Arch lists option 93 values; the client's first (primary) value
	// must be one of them. 0 BIOS, 6 IA32 UEFI, 7/9 x64 UEFI, 10 ARM32,
	// 11 ARM64, 15–19 UEFI HTTP Boot (docs/protocols.md §9.2).
	Arch []uint16
	// IPXE matches clients that are (true) or are not (false) iPXE:
	// option 77 raw "iPXE", an RFC 3004 entry "iPXE", or option 175.
	IPXE *bool
	// HTTPClient matches UEFI HTTP Boot clients (option 60 starts with
	// "HTTPClient"); they need an absolute http(s):// URL in File.
	HTTPClient *bool
	// UserClass matches one exact user class (option 77), e.g. the class
	// a custom iPXE build with an embedded script sends.
	UserClass string
	// File is a TFTP file name or an absolute http(s):// URL, rendered
	// with text/template from BootVars: {{.HTTP}} {{.MAC}} {{.MACDash}}
	// {{.IP}} {{.Arch}} {{.Hostname}} {{.Vars.name}}. An empty File
	// answers without boot information (server mode: address only;
	// proxy mode: no answer).
	File string
}

// DefaultBootRules implements the default policy of docs/protocols.md §9.10:
//
//	HTTPClient, arch 16/17 (x64)   {{.HTTP}}/ipxe.efi
//	HTTPClient, arch 15 (IA32)     {{.HTTP}}/ipxe-i386.efi
//	HTTPClient, arch 18 (ARM32)    {{.HTTP}}/snp-arm32.efi
//	HTTPClient, arch 19 (ARM64)    {{.HTTP}}/snp-arm64.efi
//	iPXE (any arch)                {{.HTTP}}/boot.ipxe?mac={{.MAC}}
//	arch 0 (BIOS)                  undionly.kpxe
//	arch 6 (IA32 UEFI)             ipxe-i386.efi
//	arch 7, 9 (x64 UEFI)           ipxe.efi
//	arch 10 (ARM32 UEFI)           snp-arm32.efi
//	arch 11 (ARM64 UEFI)           snp-arm64.efi
//	anything else                  no answer (counted as NoArch)
//
// The names are iPXE's build targets renamed per architecture so that they
// share one directory: undionly.kpxe and ipxe.efi as built
// (bin/undionly.kpxe, bin-x86_64-efi/ipxe.efi), ipxe-i386.efi from
// bin-i386-efi/ipxe.efi, snp-arm32.efi / snp-arm64.efi from
// bin-arm32-efi/snp.efi and bin-arm64-efi/snp.efi (the SNP-only build,
// which uses the firmware's network driver: the usual choice on ARM).
// Every binary rule has IPXE false, so iPXE never gets iPXE again.
func DefaultBootRules() []BootRule {
	yes, no := ptr(true), ptr(false)
	return []BootRule{
		{Name: "http-x64", HTTPClient: yes, IPXE: no, Arch: []uint16{16, 17}, File: "{{.HTTP}}/ipxe.efi"},
		{Name: "http-ia32", HTTPClient: yes, IPXE: no, Arch: []uint16{15}, File: "{{.HTTP}}/ipxe-i386.efi"},
		{Name: "http-arm32", HTTPClient: yes, IPXE: no, Arch: []uint16{18}, File: "{{.HTTP}}/snp-arm32.efi"},
		{Name: "http-arm64", HTTPClient: yes, IPXE: no, Arch: []uint16{19}, File: "{{.HTTP}}/snp-arm64.efi"},
		{Name: "ipxe-script", IPXE: yes, File: "{{.HTTP}}/boot.ipxe?mac={{.MAC}}"},
		{Name: "bios", HTTPClient: no, IPXE: no, Arch: []uint16{0}, File: "undionly.kpxe"},
		{Name: "uefi-ia32", HTTPClient: no, IPXE: no, Arch: []uint16{6}, File: "ipxe-i386.efi"},
		{Name: "uefi-x64", HTTPClient: no, IPXE: no, Arch: []uint16{7, 9}, File: "ipxe.efi"},
		{Name: "uefi-arm32", HTTPClient: no, IPXE: no, Arch: []uint16{10}, File: "snp-arm32.efi"},
		{Name: "uefi-arm64", HTTPClient: no, IPXE: no, Arch: []uint16{11}, File: "snp-arm64.efi"},
	}
}

func ptr[T any](v T) *T { return &v }

// Client is what a request says about the network boot client behind it.
type Client struct {
	Arch        []uint16 // option 93 (first is primary); from option 60's Arch field when 93 is absent
	VendorClass string   // option 60
	PXE         bool     // option 60 starts with "PXEClient"
	HTTPClient  bool     // option 60 starts with "HTTPClient"
	IPXE        bool     // docs/protocols.md §9.9
	UserClass   []string // option 77: RFC 3004 entries, or the raw bytes as one entry
}

// Netboot reports whether the client asked for boot information.
func (c Client) Netboot() bool { return c.PXE || c.HTTPClient }

// PrimaryArch returns the client's first architecture type.
func (c Client) PrimaryArch() (uint16, bool) {
	if len(c.Arch) == 0 {
		return 0, false
	}
	return c.Arch[0], true
}

// ClassifyClient reads options 60, 77, 93 and 175 of a request.
func ClassifyClient(req *dhcpv4.DHCPv4) Client {
	var c Client
	c.VendorClass = string(req.Options[optVendorClass])
	c.PXE = strings.HasPrefix(c.VendorClass, vendorPXE)
	c.HTTPClient = strings.HasPrefix(c.VendorClass, vendorHTTP)
	if a := req.Options[optClientArch]; len(a) >= 2 && len(a)%2 == 0 {
		for i := 0; i < len(a); i += 2 {
			c.Arch = append(c.Arch, uint16(a[i])<<8|uint16(a[i+1]))
		}
	} else if a, ok := archFromVendorClass(c.VendorClass); ok {
		c.Arch = []uint16{a}
	}
	raw := req.Options[optUserClass]
	if raw != nil {
		// insomniacslk parses RFC 3004 and falls back to the raw bytes;
		// iPXE sends the raw "iPXE" (docs/protocols.md §9.9).
		c.UserClass = req.UserClass()
	}
	_, encap := req.Options[optIPXEEncap]
	c.IPXE = string(raw) == "iPXE" || slices.Contains(c.UserClass, "iPXE") || encap
	return c
}

// archFromVendorClass reads "PXEClient:Arch:00007:UNDI:003000"
// (docs/protocols.md §9.1), for the rare ROM that sends the class but
// not option 93.
func archFromVendorClass(vc string) (uint16, bool) {
	_, rest, ok := strings.Cut(vc, ":Arch:")
	if !ok || len(rest) < 5 {
		return 0, false
	}
	n, err := strconv.ParseUint(rest[:5], 10, 16)
	if err != nil {
		return 0, false
	}
	return uint16(n), true
}

// archClass is the per-architecture counter bucket of a boot answer.
type archClass int

const (
	classOther archClass = iota
	classBIOS
	classUEFI32
	classUEFI64
	classARM32
	classARM64
	classHTTP
	classIPXE
)

func classify(c Client) archClass {
	switch {
	case c.IPXE:
		return classIPXE
	case c.HTTPClient:
		return classHTTP
	}
	a, _ := c.PrimaryArch()
	switch a {
	case 0:
		return classBIOS
	case 6:
		return classUEFI32
	case 7, 9:
		return classUEFI64
	case 10:
		return classARM32
	case 11:
		return classARM64
	}
	return classOther
}

func (s *Server) countClass(k archClass) {
	c := &s.Counters
	switch k {
	case classBIOS:
		c.ArchBIOS.Add(1)
	case classUEFI32:
		c.ArchUEFI32.Add(1)
	case classUEFI64:
		c.ArchUEFI64.Add(1)
	case classARM32:
		c.ArchUEFIARM32.Add(1)
	case classARM64:
		c.ArchUEFIARM64.Add(1)
	case classHTTP:
		c.ArchHTTP.Add(1)
	case classIPXE:
		c.ArchIPXE.Add(1)
	default:
		c.ArchOther.Add(1)
	}
}

// BootVars is the data a BootRule's File template sees.
type BootVars struct {
	HTTP     string // mirror base URL, no trailing slash
	MAC      string // aa:bb:cc:dd:ee:ff
	MACDash  string // aa-bb-cc-dd-ee-ff (pxelinux.cfg/01-… style)
	IP       string // the client's address ("" when unknown, e.g. a ProxyDHCP DISCOVER)
	Arch     string // primary option 93 value in decimal
	Hostname string
	Vars     map[string]string // Host.Vars of a static host
}

// Boot is a boot decision.
type Boot struct {
	Rule string // name (or index) of the rule that matched
	File string // rendered; "" = answer without boot information
}

// IsURL reports whether File is an absolute http(s) URL (for iPXE and
// HTTP Boot) rather than a TFTP file name.
func (b Boot) IsURL() bool { return isURL(b.File) }

func isURL(f string) bool {
	return strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://")
}

// rule is a BootRule with its template parsed once, at configuration time.
type rule struct {
	BootRule
	tmpl *template.Template // nil: File is literal
}

type ruleSet []rule

// compileRules parses every rule's template; names default to "rule N".
func compileRules(rules []BootRule) (ruleSet, error) {
	rs := make(ruleSet, 0, len(rules))
	var errs []error
	for i, r := range rules {
		if r.Name == "" {
			r.Name = fmt.Sprintf("rule %d", i)
		}
		t, err := compileFile(r.Name, r.File)
		if err != nil {
			//lint:ignore ST1005 config errors start with the Go field they name (PXEMTFTP.Groups, Rules[i], Prefix)
			errs = append(errs, fmt.Errorf("Rules[%d] (%s): %w", i, r.Name, err))
			continue
		}
		rs = append(rs, rule{BootRule: r, tmpl: t})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rs, nil
}

func compileFile(name, file string) (*template.Template, error) {
	if !strings.Contains(file, "{{") {
		return nil, nil
	}
	return template.New(name).Option("missingkey=zero").Parse(file)
}

func (r *rule) matches(c Client) bool {
	if len(r.Arch) > 0 {
		a, ok := c.PrimaryArch()
		if !ok || !slices.Contains(r.Arch, a) {
			return false
		}
	}
	if r.IPXE != nil && *r.IPXE != c.IPXE {
		return false
	}
	if r.HTTPClient != nil && *r.HTTPClient != c.HTTPClient {
		return false
	}
	if r.UserClass != "" && !slices.Contains(c.UserClass, r.UserClass) {
		return false
	}
	return true
}

// decide is the boot-file decision: the first matching rule, its file
// rendered. ok is false when no rule matches (unknown architecture: do not
// answer, docs/protocols.md §9.10).
func (rs ruleSet) decide(c Client, v BootVars) (b Boot, ok bool, err error) {
	for i := range rs {
		r := &rs[i]
		if !r.matches(c) {
			continue
		}
		f, err := render(r.tmpl, r.File, v)
		return Boot{Rule: r.Name, File: f}, true, err
	}
	return Boot{}, false, nil
}

// decideFor is decide with a known host first: its BootFile, for a
// client that is not iPXE (so a per-host iPXE binary cannot loop,
// docs/protocols.md §9.9) and, for HTTP Boot, only if it renders to a
// URL. h may be nil.
func (rs ruleSet) decideFor(h *host, c Client, v BootVars) (Boot, bool, error) {
	if h != nil && h.BootFile != "" && !c.IPXE {
		f, err := render(h.tmpl, h.BootFile, v)
		if err == nil && (!c.HTTPClient || isURL(f)) {
			return Boot{Rule: "host " + h.MAC.String(), File: f}, true, nil
		}
	}
	return rs.decide(c, v)
}

func render(t *template.Template, literal string, v BootVars) (string, error) {
	if t == nil {
		return literal, nil
	}
	var sb strings.Builder
	if err := t.Execute(&sb, v); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// macString formats a hardware address as aa:bb:… (sep ':') or aa-bb-….
func macString(mac net.HardwareAddr, sep byte) string {
	const hex = "0123456789abcdef"
	if len(mac) == 0 {
		return ""
	}
	b := make([]byte, 0, len(mac)*3-1)
	for i, c := range mac {
		if i > 0 {
			b = append(b, sep)
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return string(b)
}
