//go:build !linux

package privdrop

// Drop is not supported here: see ErrUnsupported.
func Drop(Identity) error { return ErrUnsupported }

// Verify is not supported here: see ErrUnsupported.
func Verify(Identity) error { return ErrUnsupported }

// Caps are a thread's capability sets (Linux only).
type Caps struct {
	Inheritable, Permitted, Effective, Ambient uint64
	NoNewPrivs                                 bool
}

// Empty reports whether no capability is held.
func (c Caps) Empty() bool { return c.Inheritable|c.Permitted|c.Effective|c.Ambient == 0 }

// DropCapabilities has nothing to drop where there are no Linux
// capabilities.
func DropCapabilities() (Caps, error) { return Caps{}, nil }
