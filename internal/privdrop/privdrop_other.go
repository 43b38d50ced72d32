//go:build !linux

package privdrop

// Drop is not supported here: see ErrUnsupported.
func Drop(Identity) error { return ErrUnsupported }

// Verify is not supported here: see ErrUnsupported.
func Verify(Identity) error { return ErrUnsupported }
