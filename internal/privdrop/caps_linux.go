package privdrop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Caps are a thread's capability sets, as /proc/PID/task/TID/status
// shows them (bit n = capability n, capability(7)).
type Caps struct {
	Inheritable, Permitted, Effective, Ambient uint64
	NoNewPrivs                                 bool
}

// Empty reports whether the thread holds no capability in any set.
func (c Caps) Empty() bool {
	return c.Inheritable|c.Permitted|c.Effective|c.Ambient == 0
}

// ErrCgo: a binary built with cgo cannot change the capabilities of
// every thread (syscall.AllThreadsSyscall refuses; libc broadcasts only
// set*id calls). `make build` sets CGO_ENABLED=0.
var ErrCgo = errors.New("privdrop: cannot drop capabilities from every thread in a cgo build (build with CGO_ENABLED=0, as make build does)")

// Linux capability ABI (linux/capability.h): version 3 takes two 32-bit
// words per set.
const linuxCapabilityVersion3 = 0x20080522

type capHeader struct {
	version uint32
	pid     int32
}

//lint:ignore U1000 the kernel reads the fields (struct __user_cap_data_struct); all zero is what capset is given
type capData struct{ effective, permitted, inheritable uint32 }

// DropCapabilities empties every capability set of every thread
// (ambient, inheritable, permitted, effective) and sets no_new_privs, so
// nothing the process execs can gain any either; then it checks each
// thread in /proc/self/task. A process that holds no capability is left
// as it is. Started as an unprivileged user with
// CAP_NET_BIND_SERVICE (systemd AmbientCapabilities=, or file
// capabilities), mtftpd calls it once its ports are open: a compromised
// process can then bind no privileged port and override no permission
// (issue 13, finding 19). It returns what the process held before.
//
// Capability sets are per thread: like Drop's set*id calls, these go to
// every thread through syscall.AllThreadsSyscall, which a cgo build
// cannot use (ErrCgo). Under a seccomp filter the capset(2) system call
// must be allowed (dist/mtftpd.service does: SystemCallFilter=capset).
func DropCapabilities() (before Caps, err error) {
	before, err = ThreadCaps("self")
	if err != nil || before.Empty() {
		return before, err
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		return before, allThreadsErr("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e)
	}
	// Heap objects (they escape) do not move; KeepAlive holds them
	// until the call has returned.
	hdr := &capHeader{version: linuxCapabilityVersion3}
	data := &[2]capData{}
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(data)), 0)
	runtime.KeepAlive(hdr)
	runtime.KeepAlive(data)
	if e != 0 {
		return before, allThreadsErr("capset", e)
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return before, allThreadsErr("prctl(PR_SET_NO_NEW_PRIVS)", e)
	}
	return before, VerifyNoCapabilities()
}

func allThreadsErr(what string, e syscall.Errno) error {
	if e == syscall.ENOTSUP {
		return ErrCgo
	}
	return fmt.Errorf("privdrop: %s: %w", what, e)
}

// VerifyNoCapabilities checks that no thread of the process holds a
// capability and every one has no_new_privs.
func VerifyNoCapabilities() error {
	tasks, err := filepath.Glob("/proc/self/task/*")
	if err != nil || len(tasks) == 0 {
		return fmt.Errorf("privdrop: cannot list threads: %v", err)
	}
	for _, task := range tasks {
		c, err := ThreadCaps(filepath.Base(task))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return err
		}
		if !c.Empty() || !c.NoNewPrivs {
			return fmt.Errorf("privdrop: thread %s still has capabilities %+v", filepath.Base(task), c)
		}
	}
	return nil
}

// ThreadCaps reads the capability sets of thread tid of this process
// ("self": the calling thread's process view).
func ThreadCaps(tid string) (Caps, error) {
	p := "/proc/self/status"
	if tid != "self" {
		p = "/proc/self/task/" + tid + "/status"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return Caps{}, err
	}
	return ParseCaps(string(b))
}

// ParseCaps reads the Cap* and NoNewPrivs lines of a /proc status file.
func ParseCaps(status string) (Caps, error) {
	var c Caps
	seen := 0
	for line := range strings.Lines(status) {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var dst *uint64
		switch key {
		case "CapInh":
			dst = &c.Inheritable
		case "CapPrm":
			dst = &c.Permitted
		case "CapEff":
			dst = &c.Effective
		case "CapAmb":
			dst = &c.Ambient
		case "NoNewPrivs":
			c.NoNewPrivs = val == "1"
			continue
		default:
			continue
		}
		v, err := strconv.ParseUint(val, 16, 64)
		if err != nil {
			return c, fmt.Errorf("privdrop: %s: %q is not a hex mask", key, val)
		}
		*dst = v
		seen++
	}
	if seen < 4 {
		return c, errors.New("privdrop: no capability sets in the status file")
	}
	return c, nil
}
