package bench

// loopbackAnyAddr: Linux routes all of 127.0.0.0/8 to lo as local
// addresses, so a socket binds to any of them unconfigured.
const loopbackAnyAddr = true
