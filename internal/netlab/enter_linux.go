package netlab

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Enter runs f on an OS thread that has joined network namespace ns (a
// full name, /run/netns/ns), so that sockets f opens live in the lab.
// Sockets keep their namespace for life; the thread goes back to the
// caller's namespace afterwards, or is thrown away (left locked) if it
// cannot, so no other goroutine ever runs inside the lab by accident.
func Enter(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once back in our namespace
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = f()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
