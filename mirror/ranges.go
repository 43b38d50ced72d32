package mirror

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// MaxRanges is the most byte ranges one request may ask for. A request
// with more, or with ranges that overlap, gets the whole file (200)
// instead: RFC 9110 §14.2 lets a server ignore a Range header, and names
// many small or overlapping ranges as a sign of a broken client or a
// denial-of-service attack. Every multipart part carries its own headers
// (about 150 bytes for a one-byte range), so 60,000 one-byte ranges made
// a 9.4 MB answer from a 700 KB request. Ignoring rather than refusing
// (416) keeps a clumsy client working, and a whole file is never more
// than a plain GET of it would send. Apache (MaxRanges 200) and nginx
// (max_ranges) do the same; 16 is far above what installers and download
// managers ask for (one range, or a few).
const MaxRanges = 16

// rangesAcceptable reports whether the Range header h may be given to
// ServeContent for a file of size bytes: at most MaxRanges ranges, none
// overlapping. A header that is not a bytes range, or does not parse, is
// acceptable here: ServeContent ignores the former and answers the
// latter with 416. It is linear in len(h) and allocates only for
// headers of at most MaxRanges ranges.
func rangesAcceptable(h string, size int64) bool {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return true
	}
	if strings.Count(spec, ",") >= MaxRanges {
		return false
	}
	type span struct{ start, end int64 } // inclusive
	var spans []span
	for r := range strings.SplitSeq(spec, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		first, last, ok := strings.Cut(r, "-")
		if !ok {
			return true
		}
		first, last = strings.TrimSpace(first), strings.TrimSpace(last)
		var s span
		if first == "" {
			// A suffix range: the last n bytes.
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return true
			}
			s = span{max(size-n, 0), size - 1}
		} else {
			a, err := strconv.ParseInt(first, 10, 64)
			if err != nil || a < 0 {
				return true
			}
			s = span{a, size - 1}
			if last != "" {
				b, err := strconv.ParseInt(last, 10, 64)
				if err != nil || b < a {
					return true
				}
				s.end = min(b, size-1)
			}
		}
		if s.start >= size || s.end < s.start {
			continue // unsatisfiable: ServeContent skips it (or answers 416)
		}
		spans = append(spans, s)
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(spans); i++ {
		if spans[i].start <= spans[i-1].end {
			return false
		}
	}
	return true
}
