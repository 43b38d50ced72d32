package main

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

// parseArgs parses a command's flags (parseFlags) and wants exactly n
// positional arguments. With another number it prints the usage and
// fails with need ("need IMAGE"); for n == 0 and need == "" the error
// names the first unexpected argument.
func parseArgs(fs *pflag.FlagSet, args []string, n int, need string) (pos []string, help bool, err error) {
	pos, help, err = parseFlags(fs, args)
	if help || err != nil || len(pos) == n {
		return pos, help, err
	}
	fs.Usage()
	if need == "" && n == 0 {
		return nil, false, fmt.Errorf("unexpected argument %q", pos[0])
	}
	return nil, false, errors.New(need)
}
