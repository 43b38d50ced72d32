package filestore

import (
	"errors"
	"path"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr error
	}{
		{in: "pxelinux.0", want: "pxelinux.0"},
		{in: "/pxelinux.0", want: "pxelinux.0"},
		{in: `\boot\bcd`, want: "boot/bcd"},
		{in: `C:\boot\bcd`, want: "C:/boot/bcd"}, // no drive letters on the server: a literal name
		{in: "//a//b/./c", want: "a/b/c"},
		{in: "a/b/", want: "a/b"},
		{in: "./a", want: "a"},
		{in: `/\/a`, want: "a"},
		{in: "pxelinux.cfg/01-52-54-00-12-34-56", want: "pxelinux.cfg/01-52-54-00-12-34-56"},
		{in: "...", want: "..."}, // three dots is a file name, not a parent
		{in: "a..b/..c/d..", want: "a..b/..c/d.."},
		{in: "%2e%2e/x", want: "%2e%2e/x"}, // not URL-decoded: a literal, harmless name
		{in: strings.Repeat("a", MaxNameLen), want: strings.Repeat("a", MaxNameLen)},

		{in: "../x", wantErr: ErrAccess},
		{in: "a/../../x", wantErr: ErrAccess},
		{in: "a/../b", wantErr: ErrAccess}, // stays inside, refused anyway
		{in: `..\x`, wantErr: ErrAccess},
		{in: `..\..\etc\passwd`, wantErr: ErrAccess},
		{in: `a\..`, wantErr: ErrAccess},
		{in: "a/..", wantErr: ErrAccess},
		{in: "..", wantErr: ErrAccess},
		{in: "/../etc/passwd", wantErr: ErrAccess},

		{in: "", wantErr: ErrBadName},
		{in: "/", wantErr: ErrBadName},
		{in: "///", wantErr: ErrBadName},
		{in: `\`, wantErr: ErrBadName},
		{in: ".", wantErr: ErrBadName},
		{in: "././/.", wantErr: ErrBadName},
		{in: "a\x00b", wantErr: ErrBadName},
		{in: "pxelinux.0\x00../../etc/passwd", wantErr: ErrBadName},
		{in: strings.Repeat("a", 600), wantErr: ErrBadName},
		{in: strings.Repeat("a", MaxNameLen+1), wantErr: ErrBadName},
	}
	for _, tt := range tests {
		got, err := CleanName(tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("CleanName(%.40q) = %q, %v; want error %v", tt.in, got, err, tt.wantErr)
			}
			if got != "" {
				t.Errorf("CleanName(%.40q) returned %q with its error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CleanName(%.40q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// The hot path calls CleanName per request; an already clean name must not
// cost an allocation.
func TestCleanNameNoAllocWhenClean(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := CleanName("pxelinux.cfg/default"); err != nil {
			t.Fatal(err)
		}
		if _, err := CleanName("../x"); err == nil {
			t.Fatal("../x accepted")
		}
	})
	if allocs != 0 {
		t.Errorf("CleanName allocated %v times per run, want 0", allocs)
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{
		"", "/", "pxelinux.0", "/pxelinux.0", `\boot\bcd`, "//a//b/./c", "../x",
		`..\x`, "a/..", "%2e%2e/x", "a\x00b", "...", `.\.`, "a/./b/", strings.Repeat("x/", 300),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CleanName(in)
		if err != nil {
			if out != "" {
				t.Fatalf("CleanName(%q) = %q with error %v", in, out, err)
			}
			if !errors.Is(err, ErrBadName) && !errors.Is(err, ErrAccess) {
				t.Fatalf("CleanName(%q) error %v wraps no sentinel", in, err)
			}
			return
		}
		if out == "" || strings.HasPrefix(out, "/") || strings.ContainsAny(out, "\x00\\") ||
			strings.Contains(out, "//") || strings.HasSuffix(out, "/") || len(out) > MaxNameLen {
			t.Fatalf("CleanName(%q) = %q: not a clean relative path", in, out)
		}
		for _, elem := range strings.Split(out, "/") {
			if elem == ".." || elem == "." {
				t.Fatalf("CleanName(%q) = %q: contains element %q", in, out, elem)
			}
		}
		if again, err := CleanName(out); err != nil || again != out {
			t.Fatalf("not idempotent: CleanName(%q) = %q, CleanName(%q) = %q, %v", in, out, out, again, err)
		}
		// Oracle: with ".." refused, cleaning is path.Clean of the
		// slash-mapped name, made relative.
		want := strings.TrimLeft(path.Clean("/"+strings.ReplaceAll(in, `\`, "/")), "/")
		if out != want {
			t.Fatalf("CleanName(%q) = %q; path.Clean oracle says %q", in, out, want)
		}
	})
}
