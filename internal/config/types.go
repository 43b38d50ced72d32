package config

import (
	"encoding"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Addresses, prefixes and MACs are typed: net/netip values, and the few
// types below, decode themselves from the file and the flags
// (encoding.TextUnmarshaler), so a value that does not parse is an error
// at load time, naming its key, and the rest of the program never parses
// one again. Validate checks what depends on other keys or on the use
// (IPv4 only, inside 239.255.0.0/16, inside the subnet).

// Net is a prefix that may be written as a bare address (a /32 or /128):
// "192.0.2.1" or "192.0.2.0/24". It is kept masked (192.0.2.7/24 is
// 192.0.2.0/24).
type Net struct{ netip.Prefix }

// UnmarshalText implements encoding.TextUnmarshaler.
func (n *Net) UnmarshalText(b []byte) error {
	p, err := ParsePrefix(string(b))
	if err != nil {
		return err
	}
	n.Prefix = p
	return nil
}

// MarshalText implements encoding.TextMarshaler: a single address is
// written bare, as it usually is in the file.
func (n Net) MarshalText() ([]byte, error) {
	if n.IsValid() && n.IsSingleIP() {
		return n.Addr().MarshalText()
	}
	return n.Prefix.MarshalText()
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

// Prefixes returns the prefixes of a list of Net.
func Prefixes(list []Net) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range list {
		out = append(out, n.Prefix)
	}
	return out
}

// Range is an inclusive address range, "192.0.2.100-192.0.2.199". Its
// order and subnet are checked by Validate.
type Range struct{ First, Last netip.Addr }

// UnmarshalText implements encoding.TextUnmarshaler; "" is the zero Range.
func (r *Range) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*r = Range{}
		return nil
	}
	a, z, ok := strings.Cut(string(b), "-")
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(z))
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%q is not a range like 192.0.2.100-192.0.2.199", b)
	}
	*r = Range{first, last}
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (r Range) MarshalText() ([]byte, error) {
	if !r.First.IsValid() {
		return []byte{}, nil // not nil: the TOML encoder takes nil for a failure (FuzzParse)
	}
	return []byte(r.String()), nil
}

func (r Range) String() string { return r.First.String() + "-" + r.Last.String() }

// MAC is an Ethernet address, "52:54:00:12:34:56"; "" is none.
type MAC net.HardwareAddr

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *MAC) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = nil
		return nil
	}
	hw, err := net.ParseMAC(string(b))
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("%q is not an Ethernet MAC like 52:54:00:12:34:56", b)
	}
	*m = MAC(hw)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (m MAC) MarshalText() ([]byte, error) { return append([]byte{}, m.String()...), nil }

func (m MAC) String() string {
	if len(m) == 0 {
		return ""
	}
	return net.HardwareAddr(m).String()
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// isText reports whether t decodes itself from text (netip types,
// Duration, the types above): a value, not a table to walk into.
func isText(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textUnmarshaler) }

// textForm says what a value of a text type looks like, for errors.
func textForm(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[netip.Addr]():
		return "an IP address like 192.0.2.1"
	case reflect.TypeFor[netip.AddrPort]():
		return "an IP address and port like 0.0.0.0:69"
	case reflect.TypeFor[netip.Prefix]():
		return "a prefix like 192.0.2.0/24"
	case reflect.TypeFor[Net]():
		return "an address or prefix like 192.0.2.1 or 192.0.2.0/24"
	case reflect.TypeFor[Range]():
		return "a range like 192.0.2.100-192.0.2.199"
	case reflect.TypeFor[MAC]():
		return "an Ethernet MAC like 52:54:00:12:34:56"
	case reflect.TypeFor[Duration]():
		return "a duration like 500ms, 2s, 1h"
	}
	return "a valid " + t.String()
}

// decodeText sets v (addressable, of a text type) from s, or says what
// s should have looked like.
func decodeText(v reflect.Value, s string) error {
	if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("%q is not %s", s, textForm(v.Type()))
	}
	return nil
}

// valueError turns the TOML decoder's error for a value that did not
// decode (its message is the parser's, like "no IP", and names no key)
// into one that names the key, with its index in a list or table array,
// and the value: `line 3: dhcp.subnet[1].router: "gw" is not an IP
// address like 192.0.2.1`. It returns nil for any other error.
func valueError(text string, pe toml.ParseError) error {
	keys := strings.Split(pe.LastKey, ".")
	t := fieldType(reflect.TypeFor[Config](), keys)
	if t == nil {
		return nil
	}
	if t.Kind() == reflect.Slice && !isText(t) {
		t = t.Elem()
	}
	if !isText(t) {
		return nil
	}
	var doc map[string]any
	if _, err := toml.Decode(text, &doc); err != nil {
		return nil
	}
	name, val, ok := badValue(doc, keys, "", t)
	if !ok {
		return nil
	}
	return fmt.Errorf("config: line %d: %s: %q is not %s", pe.Position.Line, name, fmt.Sprint(val), textForm(t))
}

// fieldType is the type of the field that the toml key path names.
func fieldType(t reflect.Type, keys []string) reflect.Type {
	for _, k := range keys {
		if t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || isText(t) {
			return nil
		}
		f, ok := fieldByTag(t, k)
		if !ok {
			return nil
		}
		t = f.Type
	}
	return t
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("toml") == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// badValue finds the first value at keys under doc (a decoded TOML
// document) that does not decode as t, and its name.
func badValue(doc any, keys []string, name string, t reflect.Type) (string, any, bool) {
	switch d := doc.(type) {
	case map[string]any:
		if len(keys) == 0 {
			return "", nil, false
		}
		v, ok := d[keys[0]]
		if !ok {
			return "", nil, false
		}
		if name != "" {
			name += "."
		}
		return badValue(v, keys[1:], name+keys[0], t)
	case []map[string]any:
		for i, e := range d {
			if n, v, ok := badValue(e, keys, fmt.Sprintf("%s[%d]", name, i), t); ok {
				return n, v, true
			}
		}
	case []any:
		for i, e := range d {
			if n, v, ok := badValue(e, keys, fmt.Sprintf("%s[%d]", name, i), t); ok {
				return n, v, true
			}
		}
	default:
		if len(keys) == 0 && decodeText(reflect.New(t).Elem(), fmt.Sprint(d)) != nil {
			return name, d, true
		}
	}
	return "", nil, false
}

// ArchList is a [[dhcp.boot]] rule's arch: option 93 values, each written
// as a number (0–65535) or as the name of a client class, the names of
// the built-in boot rules (docs/protocols.md §9.2, §9.10). A name may
// stand for more than one value ("uefi-x64" is 7 and 9: x64 firmware sends
// 7, the registry's 9 is treated alike). It is kept, and written back, as
// numbers.
type ArchList []uint16

// archNames maps each client class name to its option 93 values: the
// built-in rules' names and values (dhcp.DefaultBootRules, docs/protocols.md
// §9.10).
var archNames = map[string][]uint16{
	"bios":       {0},
	"uefi-ia32":  {6},
	"uefi-x64":   {7, 9},
	"uefi-arm32": {10},
	"uefi-arm64": {11},
	"http-ia32":  {15},
	"http-x64":   {16, 17},
	"http-arm32": {18},
	"http-arm64": {19},
}

// ErrArch is a [[dhcp.boot]] arch value that is neither a known name nor
// a number from 0 to 65535.
var ErrArch = errors.New("not an architecture")

// UnmarshalTOML implements toml.Unmarshaler: an array of numbers and
// names.
func (a *ArchList) UnmarshalTOML(v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("arch = %v: %w: want an array like [7, 9] or [\"uefi-arm64\"]", v, ErrArch)
	}
	out := ArchList{}
	for _, e := range list {
		switch x := e.(type) {
		case int64:
			if x < 0 || x > 0xffff {
				return fmt.Errorf("arch %d: %w: option 93 values are 0 to 65535", x, ErrArch)
			}
			out = append(out, uint16(x))
		case string:
			vals, ok := archNames[x]
			if !ok {
				return fmt.Errorf("arch %q: %w: known names are %s, or a number", x, ErrArch, strings.Join(ArchNames(), ", "))
			}
			out = append(out, vals...)
		default:
			return fmt.Errorf("arch %v: %w: want a number or a name", e, ErrArch)
		}
	}
	*a = out
	return nil
}

// ArchNames lists the names arch accepts, in the order of their values.
func ArchNames() []string {
	names := make([]string, 0, len(archNames))
	for n := range archNames {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return archNames[names[i]][0] < archNames[names[j]][0] })
	return names
}
