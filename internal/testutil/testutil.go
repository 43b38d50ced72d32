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

// Binary builds cmd/mtftpd at most once per test process, on first use, so
// packages whose unit tests do not need it stay fast. Declare one as a
// package variable and call Remove from TestMain (or leave the temp dir).
type Binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Path returns the built binary, building it on the first call; it skips
// the test when no Go toolchain is on PATH and fails it when the build does.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not in PATH: cannot build cmd/mtftpd")
	}
	b.once.Do(func() {
		root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			b.err = fmt.Errorf("go list -m: %w", err)
			return
		}
		if b.dir, b.err = os.MkdirTemp("", "mtftpd-test-bin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "mtftpd")
		cmd := exec.Command("go", "build", "-o", b.path, "./cmd/mtftpd")
		cmd.Dir = strings.TrimSpace(string(root))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/mtftpd: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Remove deletes the built binary, if any.
func (b *Binary) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
