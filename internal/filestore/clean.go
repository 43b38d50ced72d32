package filestore

import (
	"fmt"
	"strings"
)

// MaxNameLen is the longest file name, in bytes, that CleanName accepts.
//
// Source: RFC 2347 ("TFTP Option Extension") requires a request packet
// with options to fit in 512 octets, and 512 is the classic TFTP segment
// size (SEGSIZE in tftp-hpa) that request buffers are sized by. No
// legitimate RRQ therefore carries a longer name, so anything longer is
// refused before any work is done on it.
const MaxNameLen = 512

// Precomputed so CleanName does not allocate to report a failure; each
// wraps the sentinel callers test with errors.Is.
var (
	errEmpty   = fmt.Errorf("%w: empty", ErrBadName)
	errNUL     = fmt.Errorf("%w: NUL byte", ErrBadName)
	errTooLong = fmt.Errorf("%w: longer than %d bytes", ErrBadName, MaxNameLen)
	errDotDot  = fmt.Errorf("%w: \"..\" path element", ErrAccess)
)

// CleanName turns a file name as sent by a TFTP client into a slash
// separated path relative to the root, or reports why it cannot.
//
// Firmware sends "/pxelinux.0" and Windows loaders send `\boot\bcd`, so every
// `\` becomes `/` and leading slashes are dropped before any check (see
// docs/protocols.md §5 and §11 item 13). Empty and "." elements are removed.
// Any ".." element is refused with ErrAccess, even one that would stay
// inside the root ("a/../b"): no legitimate boot client needs it, and
// refusing it keeps the jail check trivially auditable. Names that are
// empty (after cleaning), contain a NUL byte or exceed MaxNameLen are
// refused with ErrBadName.
//
// Nothing else is decoded: "%2e%2e/x" is the literal file name "%2e%2e/x".
//
// CleanName is pure; it does not allocate when name is already clean. The
// result never starts with "/", never contains a ".." element or NUL, and
// CleanName(result) == result.
func CleanName(name string) (string, error) {
	if len(name) > MaxNameLen {
		return "", errTooLong
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errNUL
	}
	// First pass: refuse "..", count elements and see whether the name is
	// already in canonical form, so the common case returns name itself.
	canonical := true
	elems := 0
	for i := 0; i <= len(name); {
		j := i
		for j < len(name) && name[j] != '/' && name[j] != '\\' {
			j++
		}
		if j < len(name) && name[j] == '\\' {
			canonical = false
		}
		switch elem := name[i:j]; elem {
		case "", ".":
			// Empty elements come from leading, trailing or doubled
			// separators; all of them are dropped.
			canonical = false
		case "..":
			return "", errDotDot
		default:
			elems++
		}
		i = j + 1
	}
	if elems == 0 {
		return "", errEmpty
	}
	if canonical {
		return name, nil
	}
	b := make([]byte, 0, len(name))
	for i := 0; i <= len(name); {
		j := i
		for j < len(name) && name[j] != '/' && name[j] != '\\' {
			j++
		}
		if elem := name[i:j]; elem != "" && elem != "." {
			if len(b) > 0 {
				b = append(b, '/')
			}
			b = append(b, elem...)
		}
		i = j + 1
	}
	return string(b), nil
}
