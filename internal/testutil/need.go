package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Unavailable stops a test that lacks something `make test` installs
// (scripts/test-deps.sh). As root, as CI runs the tests, that is a
// failure: it must be there, and a skip would hide a test that never ran.
// Otherwise the test is skipped.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Fatalf(format+" (scripts/test-deps.sh installs it)", args...)
		return
	}
	t.Skipf(format+" and not root", args...)
}

// Tool returns the path of a command `make test` installs, or stops the
// test (Unavailable).
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s not installed", name)
	}
	return p
}
