//go:build !linux

package ra

import (
	"errors"
	"fmt"
	"net"
)

// openIface: router advertisements are built and tested on Linux only
// (README "Supported systems"); elsewhere no interface opens, and Open
// returns ErrNoInterface or the interface's error.
func openIface(ifi net.Interface) (*Iface, error) {
	return nil, fmt.Errorf("ra: interface %q: %w", ifi.Name, errors.ErrUnsupported)
}
