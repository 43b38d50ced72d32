// Package testutil holds small helpers shared by the tests that run the
// mtftpd binary and real clients. Test code only; it never touches the
// network.
package testutil

import (
	"bytes"
	"sync"
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
