package udpio

import "golang.org/x/sys/unix"

// Queued reports whether a datagram is waiting in the socket's receive
// queue (SIOCINQ), without reading it: a server deciding which of its
// unanswered requests to drop can tell one whose client has answered
// already, before the session got round to reading it.
func (c *Conn) Queued() bool {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n > 0
}
