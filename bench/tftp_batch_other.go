//go:build !linux

package bench

import (
	"context"
	"errors"
	"time"
)

// batchSupported: the batch engine needs recvmmsg, sendmmsg and
// IP_PKTINFO's source address on a wildcard socket (Linux).
const batchSupported = false

// runBatch is not available here; config refuses the engine first.
func (r *swarmRun) runBatch(context.Context, time.Time) error {
	return errors.New("bench: the batch engine is not supported on this OS (Linux only)")
}
