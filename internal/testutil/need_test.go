package testutil

import (
	"os"
	"testing"
)

// recorder is a testing.TB that records how a test was stopped.
type recorder struct {
	testing.TB
	failed, skipped bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Skipf(string, ...any)  { r.skipped = true }

// A missing tool fails the test as root (CI) and skips it otherwise.
func TestToolMissing(t *testing.T) {
	r := &recorder{TB: t}
	Tool(r, "mtftpd-no-such-tool-anywhere")
	root := os.Geteuid() == 0
	if r.failed != root || r.skipped == root {
		t.Fatalf("as euid %d: failed %v, skipped %v; want a failure as root, a skip otherwise", os.Geteuid(), r.failed, r.skipped)
	}
	r = &recorder{TB: t}
	if p := Tool(r, "sh"); p == "" || r.failed || r.skipped {
		t.Fatalf("sh: %q, failed %v, skipped %v", p, r.failed, r.skipped)
	}
}
