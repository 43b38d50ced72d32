//go:build !linux

package privdrop

import (
	"errors"
	"testing"
)

// TestUnsupported: where credentials cannot be dropped, Drop and Verify
// say so rather than pretend.
func TestUnsupported(t *testing.T) {
	if err := Drop(Identity{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Drop: %v, want ErrUnsupported", err)
	}
	if err := Verify(Identity{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Verify: %v, want ErrUnsupported", err)
	}
}
