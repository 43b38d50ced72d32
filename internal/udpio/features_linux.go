package udpio

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// probeKernel finds what this kernel offers by sending to itself on a
// throwaway loopback socket: one message through sendmmsg, then two GSO
// segments. Loopback always has checksum offload, so a NIC that cannot do
// GSO is only found at send time (WriteDatagrams' fallback).
func probeKernel() Caps {
	caps := Caps{GSOMaxSegments: gsoMaxSegments}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		caps.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	caps.GSOEqualTailBug = gsoEqualTailBuggy(caps.KernelRelease)
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return caps
	}
	defer uc.Close()
	rc, err := uc.SyscallConn()
	if err != nil {
		return caps
	}
	w := newMMsgWriter(rc, false, false)
	self := uc.LocalAddr().(*net.UDPAddr)
	var payload [16]byte
	ms := []ipv4.Message{{Buffers: [][]byte{payload[:1]}, Addr: self}}
	if n, err := w.WriteBatch(ms, 0); err != nil || n != 1 {
		return caps
	}
	caps.MMsg = true
	var oob [oobSlot]byte
	ms[0].Buffers = [][]byte{payload[:8], payload[8:]}
	ms[0].OOB = gsoControl(oob[:], 8)
	if n, err := w.WriteBatch(ms, 0); err == nil && n == 1 {
		caps.GSO = true
	}
	return caps
}
