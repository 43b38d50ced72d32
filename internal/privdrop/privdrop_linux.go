package privdrop

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Drop sets the supplementary groups, the gid and the uid of every thread
// of the process to id, then checks each thread's credentials in
// /proc/self/task and that root cannot be regained. It must run after
// every privileged socket is open and before any untrusted input is
// handled.
//
// The syscall package's Setgroups, Setgid and Setuid apply to all threads
// (Go ≥ 1.16, AllThreadsSyscall); x/sys/unix.Setgroups would change only
// the calling thread, leaving root threads behind in the Go runtime's pool.
func Drop(id Identity) error {
	if err := syscall.Setgroups(id.Groups); err != nil {
		return fmt.Errorf("setgroups %v: %w", id.Groups, err)
	}
	if err := syscall.Setgid(id.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", id.GID, err)
	}
	if err := syscall.Setuid(id.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", id.UID, err)
	}
	if err := Verify(id); err != nil {
		return err
	}
	if id.UID != 0 {
		if err := syscall.Setuid(0); err == nil {
			return fmt.Errorf("setuid 0 succeeded after dropping to uid %d", id.UID)
		}
	}
	return nil
}

// Verify checks that every thread of the process runs with id's real,
// effective, saved and filesystem uid and gid, and id's groups.
func Verify(id Identity) error {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return fmt.Errorf("privdrop: cannot list threads: %v", err)
	}
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread exited meanwhile
			}
			return err
		}
		uids, gids, groups := statusField(b, "Uid:"), statusField(b, "Gid:"), statusField(b, "Groups:")
		for _, u := range uids {
			if u != id.UID {
				return fmt.Errorf("privdrop: thread %s still has uid %v", filepath.Base(filepath.Dir(path)), uids)
			}
		}
		for _, g := range gids {
			if g != id.GID {
				return fmt.Errorf("privdrop: thread %s still has gid %v", filepath.Base(filepath.Dir(path)), gids)
			}
		}
		want := slices.Sorted(slices.Values(id.Groups))
		if got := slices.Sorted(slices.Values(groups)); !slices.Equal(got, want) {
			return fmt.Errorf("privdrop: thread %s has groups %v, want %v", filepath.Base(filepath.Dir(path)), got, want)
		}
	}
	return nil
}

// statusField parses a line of numbers from /proc/PID/status.
func statusField(status []byte, key string) []int {
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			var out []int
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.Atoi(f); err == nil {
					out = append(out, n)
				}
			}
			return out
		}
	}
	return nil
}
