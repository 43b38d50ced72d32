package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// What the TFTP and multicast swarms share: checking the file fields,
// naming the check in the report, keeping error samples and saying why a
// run stopped early.

// checkFileFields reports through bad a missing file, a negative size
// and a digest of the wrong length.
func checkFileFields(bad func(format string, a ...any), file string, sum []byte, size int64) {
	if file == "" {
		bad("File: required")
	}
	if size < 0 {
		bad("Size: %d is negative", size)
	}
	if sum != nil && len(sum) != sha256.Size {
		bad("SHA256: %d bytes, want %d", len(sum), sha256.Size)
	}
}

// verifyText is a report's Verify: "sha256:HEX", or "" without a digest.
func verifyText(sum []byte) string {
	if sum == nil {
		return ""
	}
	return "sha256:" + hex.EncodeToString(sum)
}

// errorSamples keeps the first maxErrorSamples distinct errors of a run.
type errorSamples map[string]bool

// add appends msg to samples unless they are full or key was seen.
func (seen errorSamples) add(samples []string, key, msg string) []string {
	if len(samples) >= maxErrorSamples || seen[key] {
		return samples
	}
	seen[key] = true
	return append(samples, msg)
}

// stoppedText is a report's Stopped: why a run ended early, by the
// caller (ctx) or at its cap (capCtx, maxTime); "" if it did not.
func stoppedText(ctx, capCtx context.Context, maxTime time.Duration) string {
	switch {
	case ctx.Err() != nil:
		return "cancelled: " + ctx.Err().Error()
	case capCtx.Err() != nil:
		return fmt.Sprintf("max time %v reached", maxTime)
	}
	return ""
}
