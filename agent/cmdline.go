package agent

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Cmdline is what the server put on the deploy kernel's command line
// (docs/imaging.md, "Kernel command line").
type Cmdline struct {
	HTTP   string           // mtftpd.http: the mirror's base URL
	Server string           // mtftpd.server: the TFTP host:port (multicast)
	Task   string           // mtftpd.task
	Token  string           // mtftpd.token
	MAC    net.HardwareAddr // mtftpd.mac, else pxelinux's BOOTIF=01-aa-bb-...
	// A deploy named on the command line instead of by a server task
	// (docs/imaging.md, "A task on the command line"): mtftpd.image (the
	// image's name under the TFTP root), mtftpd.disk (required with it:
	// a command-line task never picks a disk by itself) and mtftpd.after.
	// No token is needed then, and nothing is reported.
	Image, Disk, After string
	// Debug (mtftpd.debug) prints the deploy's own events (multicast
	// session, NAKs, refetches) on the console, for a machine that
	// misbehaves in the field.
	Debug bool
}

// ErrCmdline: the command line lacks something the agent needs, or has it
// malformed.
var ErrCmdline = errors.New("agent: kernel command line")

// maxCmdline bounds what is parsed: the kernel's own limit is
// COMMAND_LINE_SIZE, 2048 bytes on x86 (arch/x86/include/asm/setup.h).
const maxCmdline = 64 << 10

// ParseCmdline reads /proc/cmdline's text. Words are split on white
// space (the kernel's quoting with "" is honoured); unknown words are
// ignored, and a repeated key keeps its last value as the kernel does
// for its own parameters. mtftpd.http and mtftpd.token are required;
// mtftpd.mac wins over BOOTIF.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	if len(s) > maxCmdline {
		return c, fmt.Errorf("%w: %d bytes, more than %d", ErrCmdline, len(s), maxCmdline)
	}
	var bootif, mac string
	for _, w := range splitCmdline(s) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "mtftpd.http":
			c.HTTP = v
		case "mtftpd.server":
			c.Server = v
		case "mtftpd.task":
			c.Task = v
		case "mtftpd.token":
			c.Token = v
		case "mtftpd.mac":
			mac = v
		case "mtftpd.image":
			c.Image = v
		case "mtftpd.disk":
			c.Disk = v
		case "mtftpd.after":
			c.After = v
		case "mtftpd.debug":
			c.Debug = v == "" || v == "1" || v == "true"
		case "BOOTIF":
			bootif = v
		}
	}
	if c.HTTP == "" {
		return c, fmt.Errorf("%w: no mtftpd.http= (the mirror's URL)", ErrCmdline)
	}
	if u, err := url.Parse(c.HTTP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("%w: mtftpd.http=%.100q is not an http(s) URL", ErrCmdline, c.HTTP)
	}
	c.HTTP = strings.TrimRight(c.HTTP, "/")
	switch {
	case c.Image != "" && c.Disk == "":
		return c, fmt.Errorf("%w: mtftpd.image= needs mtftpd.disk= (a command-line task never picks a disk by itself)", ErrCmdline)
	case c.Image != "" && (strings.HasPrefix(c.Image, "/") || slices.Contains(strings.Split(c.Image, "/"), "..")):
		return c, fmt.Errorf("%w: mtftpd.image=%.100q is not a name under the server's root", ErrCmdline, c.Image)
	case c.Image == "" && c.Token == "":
		return c, fmt.Errorf("%w: no mtftpd.token= (and no mtftpd.image=)", ErrCmdline)
	}
	switch {
	case mac != "":
		hw, err := parseMAC(mac)
		if err != nil {
			return c, fmt.Errorf("%w: mtftpd.mac=%.40q: %v", ErrCmdline, mac, err)
		}
		c.MAC = hw
	case bootif != "":
		// pxelinux's IPAPPEND 2: BOOTIF=<ARP hardware type>-<MAC with dashes>;
		// type 01 is Ethernet (RFC 1700).
		typ, rest, ok := strings.Cut(bootif, "-")
		if !ok || typ != "01" {
			return c, fmt.Errorf("%w: BOOTIF=%.40q is not 01-aa-bb-cc-dd-ee-ff", ErrCmdline, bootif)
		}
		hw, err := parseMAC(rest)
		if err != nil {
			return c, fmt.Errorf("%w: BOOTIF=%.40q: %v", ErrCmdline, bootif, err)
		}
		c.MAC = hw
	}
	return c, nil
}

// parseMAC accepts a 6-byte Ethernet address with ':' or '-'.
func parseMAC(s string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil {
		return nil, err
	}
	if len(hw) != 6 {
		return nil, fmt.Errorf("%d bytes, not an Ethernet address", len(hw))
	}
	return hw, nil
}

// splitCmdline splits on spaces outside double quotes and drops the
// quotes, as the kernel's next_arg (lib/cmdline.c) does.
func splitCmdline(s string) []string {
	var out []string
	var b strings.Builder
	quoted, in := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			in = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if in {
				out = append(out, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, b.String())
	}
	return out
}

// String writes c back as kernel arguments (the token included).
func (c Cmdline) String() string {
	var w []string
	add := func(k, v string) {
		if v != "" {
			if strings.ContainsAny(v, " \t\n\r\"") {
				v = `"` + strings.ReplaceAll(v, `"`, "") + `"`
			}
			w = append(w, k+"="+v)
		}
	}
	add("mtftpd.http", c.HTTP)
	add("mtftpd.server", c.Server)
	add("mtftpd.task", c.Task)
	add("mtftpd.token", c.Token)
	if c.MAC != nil {
		add("mtftpd.mac", c.MAC.String())
	}
	add("mtftpd.image", c.Image)
	add("mtftpd.disk", c.Disk)
	add("mtftpd.after", c.After)
	return strings.Join(w, " ")
}
