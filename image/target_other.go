//go:build !linux

package image

import (
	"errors"
)

// OpenTarget needs Linux: the checks that keep a deploy off a mounted or
// running disk read /proc and /sys.
func OpenTarget(path string, rawSize int64, opts TargetOptions) (*Target, error) {
	return nil, &TargetError{Path: path, What: "deploying to a disk needs Linux", Err: errors.ErrUnsupported}
}

func (t *Target) zeroRange(off, n int64) error { return t.writeZeros(off, n) }
