//go:build unix

package bench

import "syscall"

// processCPU returns the user + system CPU seconds this process has used:
// a swarm reports its own cost, so a reader can tell a server that is
// slow from a load generator that is saturated.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
