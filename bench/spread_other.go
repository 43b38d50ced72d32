//go:build !linux

package bench

// loopbackAnyAddr: elsewhere (the BSDs, macOS, Windows) only the
// addresses configured on the loopback interface can be bound.
const loopbackAnyAddr = false
