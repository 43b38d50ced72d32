//go:build !linux

package netlab

import (
	"errors"
	"runtime"
)

// errNoNamespaces: network namespaces are Linux-only. New already skips
// (unavailable), so Enter is only reached by a test that made no lab.
var errNoNamespaces = errors.New("netlab: network namespaces need Linux (GOOS=" + runtime.GOOS + ")")

// Enter fails here: see errNoNamespaces.
func Enter(string, func() error) error { return errNoNamespaces }

// processAlive is never asked here (no lab, so no owner files); if it
// were, it says alive so that nothing is removed.
func processAlive(int) bool { return true }
