//go:build linux && race

package udpio

import (
	"runtime"
	"unsafe"

	"golang.org/x/net/ipv4"
)

// The send and receive paths hand buffers to the kernel in raw syscalls the
// race detector cannot see; these tell it (as x/net/internal/socket does).

func raceReadMessage(m *ipv4.Message) {
	for _, b := range m.Buffers {
		if len(b) > 0 {
			runtime.RaceReadRange(unsafe.Pointer(&b[0]), len(b))
		}
	}
	if len(m.OOB) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&m.OOB[0]), len(m.OOB))
	}
}

func raceWriteBuffer(b []byte) {
	if len(b) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&b[0]), len(b))
	}
}
