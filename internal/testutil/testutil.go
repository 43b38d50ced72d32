// Package testutil holds small helpers shared by the tests that run the
// mtftpd binary and real clients. Test code only; on the network it only
// opens loopback sockets of its own (SlowTFTP).
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// SyncBuffer collects a running process's output (its Stdout/Stderr) while
// the test reads it: Write and String may be called concurrently.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// built is cmd/mtftpd as this test process built it.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// BuildBinary builds cmd/mtftpd as make build does (CGO_ENABLED=0:
// privdrop needs syscall.AllThreadsSyscall to drop capabilities from every
// thread) at most once per test process, and returns its path. Tests call
// Binary; BuildBinary is for a TestMain whose every test needs the binary.
// Main removes it.
func BuildBinary() (string, error) {
	built.once.Do(func() {
		if _, err := exec.LookPath("go"); err != nil {
			built.err = fmt.Errorf("go not in PATH: cannot build cmd/mtftpd: %w", err)
			return
		}
		root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			built.err = fmt.Errorf("go list -m: %w", err)
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "mtftpd-test-bin-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "mtftpd")
		cmd := exec.Command("go", "build", "-o", built.path, "./cmd/mtftpd")
		cmd.Dir = strings.TrimSpace(string(root))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/mtftpd: %v\n%s", err, out)
		}
	})
	return built.path, built.err
}

// Binary returns cmd/mtftpd, building it on the first call (so packages
// whose unit tests do not need it stay fast); it fails t when the build
// does. The package's TestMain must call Main, which removes it.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := BuildBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Main runs the package's tests, removes the binary Binary built, and
// exits with the tests' code: call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}
