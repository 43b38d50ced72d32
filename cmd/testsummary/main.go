// Command testsummary reads `go test -json` on stdin and prints what
// `go test` prints without -v (an ok line per package, the full output of
// every failing test and package), then a summary: every skipped test
// with its reason, grouped by why, and the failed tests again.
//
// It exists because many tests skip when they cannot run (not root, a
// package missing, the slow firmware runs), so a green run may have
// tested little: the summary says what was not run. Run as root (euid 0,
// as `make test` runs in CI) it fails when a test skipped for want of
// root, the network lab, QEMU or a package: make test installs the
// packages as root (scripts/test-deps.sh), so such a skip there is a
// broken environment or a broken test, never "fine". The slow runs that
// only `make e2e-slow` enables are expected skips.
//
// It must never hide output of a failure: a failing test's output is
// printed in full, whatever it holds.
//
//	go test -json ./... | go run ./cmd/testsummary
//
// Exit status: 1 when a test or package failed, or (as root) a test that
// needs root or a package skipped; 0 otherwise.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

func main() {
	root := flag.Bool("root", os.Geteuid() == 0, "fail when a test that needs root or a package skipped (default: when running as root)")
	flag.Parse()
	s := newSummary(os.Stdout, *root)
	if err := s.read(os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	if !s.finish() {
		os.Exit(1)
	}
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time        time.Time
	Action      string
	Package     string
	ImportPath  string // build-output, build-fail
	Test        string
	Elapsed     float64
	Output      string
	FailedBuild string
}

// maxLine bounds one line of the stream: a test may print a long line
// (a hex dump), and bufio.Scanner's default 64 KiB would stop the run.
const maxLine = 64 << 20

type key struct{ pkg, test string }

// skip is one skipped test and why.
type skip struct {
	pkg, test, reason string
	class             class
}

type class int

const (
	classOther   class = iota // the environment lacks something optional (IPv6, a kernel path)
	classSlow                 // enabled by make e2e-slow only
	classRoot                 // needs root, the network lab or QEMU
	classPackage              // needs a Debian package make test installs
)

var classTitles = map[class]string{
	classRoot:    "needs root (the network lab, QEMU, mounts, privileges)",
	classPackage: "needs a package (scripts/test-deps.sh installs it as root)",
	classSlow:    "slow, run by make e2e-slow",
	classOther:   "other",
}

// The classes are told by the skip message: the tests say why they skip
// (internal/netlab's "netlab: not root", "needs root: ...", "X not
// installed (make test installs it)", e2e's "make e2e-slow").
var (
	reSlow    = regexp.MustCompile(`(?i)e2e-slow|MTFTPD_E2E_SLOW`)
	rePackage = regexp.MustCompile(`(?i)not installed|make test installs|test-deps|not found \(Debian package`)
	reRoot    = regexp.MustCompile(`(?i)needs root|not root|as root|netlab|qemu|CAP_[A-Z_]+`)
)

func classify(reason string) class {
	switch {
	case reSlow.MatchString(reason):
		return classSlow
	case rePackage.MatchString(reason):
		return classPackage
	case reRoot.MatchString(reason):
		return classRoot
	}
	return classOther
}

type summary struct {
	w    io.Writer
	root bool

	out     map[key][]string // output of running tests and packages (test "")
	skips   []skip
	failed  []key // tests, and packages with test ""
	counts  map[string]int
	pkgFail bool
}

func newSummary(w io.Writer, root bool) *summary {
	return &summary{w: w, root: root, out: map[key][]string{}, counts: map[string]int{}}
}

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event: go test prints some things as plain text.
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.w, e.Output)
		return
	case "build-fail":
		s.failed = append(s.failed, key{e.ImportPath, ""})
		s.pkgFail = true
		return
	}
	k := key{e.Package, e.Test}
	switch e.Action {
	case "output":
		s.out[k] = append(s.out[k], e.Output)
	case "pass":
		if e.Test == "" {
			s.printPackage(e.Package, "ok  ", "?   ")
		} else {
			s.counts["pass"]++
		}
		delete(s.out, k)
	case "skip":
		if e.Test == "" { // no test files
			s.printPackage(e.Package, "?   ", "ok  ")
			delete(s.out, k)
			return
		}
		s.counts["skip"]++
		r := reason(s.out[k])
		s.skips = append(s.skips, skip{e.Package, e.Test, r, classify(r)})
		delete(s.out, k)
	case "fail":
		if e.Test != "" {
			s.counts["fail"]++
			s.failed = append(s.failed, k)
			s.printTest(k)
			return
		}
		// The package failed: what is left of it is output outside any
		// test (a panic, a timeout, a race report, the FAIL lines) and
		// tests that never ended (the binary died under them).
		s.pkgFail = true
		s.failed = append(s.failed, k)
		var open []key
		for o := range s.out {
			if o.pkg == e.Package && o.test != "" {
				open = append(open, o)
			}
		}
		slices.SortFunc(open, func(a, b key) int { return strings.Compare(a.test, b.test) })
		for _, o := range open {
			s.printTest(o)
		}
		s.printTest(k)
	}
}

// printPackage prints the package's summary line ("ok  …" or "?   …")
// and forgets the rest of its output, as go test without -v does.
func (s *summary) printPackage(pkg string, prefixes ...string) {
	for _, l := range s.out[key{pkg, ""}] {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				fmt.Fprint(s.w, l)
			}
		}
	}
	delete(s.out, key{pkg, ""})
}

// printTest prints the whole output of a failed test but the lines
// test2json needs and go test without -v does not show.
func (s *summary) printTest(k key) {
	for _, l := range s.out[k] {
		if strings.HasPrefix(l, "=== RUN") || strings.HasPrefix(l, "=== PAUSE") ||
			strings.HasPrefix(l, "=== CONT") || strings.HasPrefix(l, "=== NAME") {
			continue
		}
		fmt.Fprint(s.w, l)
	}
	delete(s.out, k)
}

// reason is the message of a skipped test: its last logged line (t.Skip
// logs last), "file_test.go:12: message" as the test printed it.
func reason(lines []string) string {
	r := ""
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		r = t
	}
	if r == "" {
		return "(no reason given)"
	}
	return r
}

// finish prints the summary and reports whether the run is a success.
func (s *summary) finish() bool {
	w := s.w
	fmt.Fprintf(w, "\n=== Summary: %d passed, %d failed, %d skipped\n", s.counts["pass"], s.counts["fail"], s.counts["skip"])
	slices.SortStableFunc(s.skips, func(a, b skip) int {
		return strings.Compare(a.pkg+" "+a.test, b.pkg+" "+b.test)
	})
	bad := 0
	for _, c := range []class{classRoot, classPackage, classOther, classSlow} {
		var in []skip
		for _, sk := range s.skips {
			if sk.class == c {
				in = append(in, sk)
			}
		}
		if len(in) == 0 {
			continue
		}
		fatal := s.root && (c == classRoot || c == classPackage)
		mark := ""
		if fatal {
			mark = " — NOT ALLOWED as root"
			bad += len(in)
		}
		fmt.Fprintf(w, "\nSkipped, %s: %d%s\n", classTitles[c], len(in), mark)
		for _, sk := range in {
			fmt.Fprintf(w, "  %s %s\n      %s\n", shortPkg(sk.pkg), sk.test, sk.reason)
		}
	}
	if len(s.failed) > 0 {
		fmt.Fprintf(w, "\nFailed:\n")
		for _, f := range s.failed {
			if f.test == "" {
				fmt.Fprintf(w, "  %s (package)\n", f.pkg)
			} else {
				fmt.Fprintf(w, "  %s %s\n", shortPkg(f.pkg), f.test)
			}
		}
	}
	if bad > 0 {
		fmt.Fprintf(w, "\nFAIL: %d tests that need root or a package skipped although running as root: "+
			"install what they need (scripts/test-deps.sh) or make them fail instead of skipping\n", bad)
	}
	return len(s.failed) == 0 && !s.pkgFail && bad == 0
}

// shortPkg drops the module path, which every package shares.
func shortPkg(p string) string {
	const mod = "github.com/mtftpd/mtftpd/"
	if rest, ok := strings.CutPrefix(p, mod); ok {
		return rest
	}
	return p
}
