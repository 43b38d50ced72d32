//go:build !linux

// Command nfqdelay delays NFQUEUE packets; it needs Linux (see main.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "nfqdelay: needs Linux (netfilter NFQUEUE)")
	os.Exit(2)
}
