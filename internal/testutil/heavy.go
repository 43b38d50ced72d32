package testutil

import (
	"sync"
	"testing"
)

// Heavy makes the tests that load the machine most — QEMU boots and
// multicast rooms of many receivers — take turns across the test
// binaries that `go test ./...` runs side by side (two at a time on two
// cores). Side by side they starved each other: a room receiver got no
// CPU for the 5 s after which the server drops a silent receiver, and a
// room that must finish in one session took two (CI: TestLabImageRoom
// while e2e booted three VMs). Each holds one exclusive lock for its
// duration (released at cleanup); lighter tests run beside them as
// before. A test may call it more than once.
func Heavy(t testing.TB) {
	t.Helper()
	heavyMu.Lock()
	defer heavyMu.Unlock()
	if heavyHeld[t] {
		return
	}
	release, err := lockHeavy()
	if err != nil {
		t.Fatalf("testutil.Heavy: %v", err)
	}
	heavyHeld[t] = true
	t.Cleanup(func() {
		heavyMu.Lock()
		delete(heavyHeld, t)
		heavyMu.Unlock()
		release()
	})
}

var (
	heavyMu   sync.Mutex
	heavyHeld = map[testing.TB]bool{}
)
