//go:build !linux

package bench

import (
	"context"
	"errors"
)

// openDHCPTransport needs SO_BINDTODEVICE: without it a storm could not be
// held to one interface, so it does not run at all.
func openDHCPTransport(context.Context, string) (Transport, error) {
	return nil, errors.New("bench: the DHCP storm needs Linux (SO_BINDTODEVICE); use a Transport")
}
