//go:build !linux

package udpio

// Queued reports false where the queue cannot be looked at.
func (c *Conn) Queued() bool { return false }
