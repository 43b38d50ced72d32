package filestore

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
)

// ErrFault reports a memory fault while reading a mapping: the file was
// truncated under us and the pages past its new end are gone (SIGBUS).
var ErrFault = errors.New("file truncated while being read (memory fault on mapping)")

// ReadMapped runs fn, which reads mappings (File.Data), with memory faults
// turned into an error wrapping ErrFault: a file truncated on disk fails
// the one reader, not the process. Any other panic in fn goes on
// unchanged. It runs fn on the calling goroutine (SetPanicOnFault is per
// goroutine) and restores that goroutine's previous setting.
func ReadMapped(fn func()) (err error) {
	// Not built on CatchFault: this form allocates nothing, so that
	// senders may call it per block.
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = faultError(r)
		}
	}()
	fn()
	return nil
}

// CatchFault is ReadMapped for a function whose whole body reads
// mappings and whose results a fault must not lose:
//
//	defer filestore.CatchFault(func(err error) { res.Err = err })()
//
// It turns fault panics on for the calling goroutine; the function it
// returns, which must be deferred (recover works only there), restores
// the previous setting and passes a memory fault to onFault. Any other
// panic goes on unchanged.
func CatchFault(onFault func(error)) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			onFault(faultError(r))
		}
	}
}

// faultError turns a recovered memory fault into an error wrapping
// ErrFault; it panics again with anything else (a real bug).
func faultError(r any) error {
	addr, ok := faultAddr(r)
	if !ok {
		panic(r)
	}
	return fmt.Errorf("%w at %#x", ErrFault, addr)
}

// faultAddr reports whether a recovered value is a memory fault turned
// into a panic by debug.SetPanicOnFault, and the faulting address: such
// runtime errors carry an Addr method (documented on SetPanicOnFault).
func faultAddr(r any) (uintptr, bool) {
	if _, ok := r.(runtime.Error); !ok {
		return 0, false
	}
	if e, ok := r.(interface{ Addr() uintptr }); ok {
		return e.Addr(), true
	}
	return 0, false
}
