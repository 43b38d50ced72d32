package netlab

import "syscall"

// processAlive reports whether process pid exists (kill(2) with signal 0).
func processAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }
