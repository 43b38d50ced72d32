package status

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable returns s safe to print on a terminal: control characters
// (C0 with tab and newline, DEL, C1 with the one-byte CSI 0x9b), bidi
// overrides and isolates, and bytes that are not UTF-8 become Go-style
// escapes (\x1b, \u202e). File names, MACs and host names in a snapshot
// come from the network: an uploaded file named "\x1b]0;…\x07\x1b[2J"
// must not retitle or clear the admin's terminal (issue 13, finding 17).
func Printable(s string) string {
	clean := true
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, n) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r, n) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r, n):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// unsafeRune: a control character, a bidi control (it reorders what
// follows on screen, "Trojan Source", CVE-2021-42574), or a byte that is
// not UTF-8 (a lone 0x9b is a CSI on 8-bit terminals).
func unsafeRune(r rune, n int) bool {
	return (r == utf8.RuneError && n == 1) || unicode.IsControl(r) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}

// printable returns a copy of s with every string made Printable.
func (s Snapshot) printable() Snapshot {
	p := Printable
	out := s
	out.Clients = make([]Client, len(s.Clients))
	for i, c := range s.Clients {
		c.IP, c.MAC, c.Hostname, c.Arch = p(c.IP), p(c.MAC), p(c.Hostname), p(c.Arch)
		c.Sessions = mapStrings(c.Sessions, p)
		out.Clients[i] = c
	}
	fix := func(ts []Transfer) []Transfer {
		o := make([]Transfer, len(ts))
		for i, t := range ts {
			t.Client, t.MAC, t.Op, t.File, t.Outcome = p(t.Client), p(t.MAC), p(t.Op), p(t.File), p(t.Outcome)
			o[i] = t
		}
		return o
	}
	out.Transfers, out.Recent = fix(s.Transfers), fix(s.Recent)
	out.Sessions = make([]Session, len(s.Sessions))
	for i, m := range s.Sessions {
		m.Dialect, m.File, m.Group = p(m.Dialect), p(m.File), p(m.Group)
		rx := make([]Receiver, len(m.Receivers))
		for j, r := range m.Receivers {
			r.Addr, r.MAC = p(r.Addr), p(r.MAC)
			rx[j] = r
		}
		m.Receivers = rx
		out.Sessions[i] = m
	}
	return out
}

func mapStrings(in []string, f func(string) string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}
