package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/mtftpd/mtftpd/internal/config"
)

// Flags may follow the positional arguments, the standard library's
// one-dash spelling of long flags still works, and -- ends the flags.
func TestFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	_, addr, _, _ := startDemo(t, filepath.Join(dir, "hello.txt"))
	want, _ := os.ReadFile(filepath.Join(dir, "hello.txt"))
	for i, args := range [][]string{
		{"get", addr, "hello.txt", "-o", filepath.Join(dir, "a"), "--blksize", "1468", "-q"},
		{"get", addr, "--retries=3", "hello.txt", "--output=" + filepath.Join(dir, "b"), "--quiet"},
		{"get", "-blksize", "1468", "-o", filepath.Join(dir, "c"), addr, "hello.txt", "--q"},
		{"get", "-q", "-o", filepath.Join(dir, "d"), "--", addr, "hello.txt"},
	} {
		out, code := mtftpd(t, args...)
		if code != 0 || out != "" {
			t.Errorf("%v: exit %d, output %q (want 0 and nothing: quiet)", args, code, out)
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, string(rune('a'+i))))
		if err != nil || !bytes.Equal(got, want) || len(want) == 0 {
			t.Errorf("%v: file %q, %v; want %q", args, got, err, want)
		}
	}
}

// A boolean config key alone means true; =false turns it off, and so
// does the next word false, as scripts wrote it for the flag package.
func TestBoolConfigFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--tftp.allow_overwrite", "--mtftp.enabled=false", "--demo"},
		{"--demo", "--tftp.allow_overwrite", "true", "--mtftp.enabled", "false"},
		{"--mtftp.enabled", "0", "--tftp.allow_overwrite"},
	} {
		out, code := mtftpd(t, append([]string{"serve", "--print-config"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, out)
		}
		for _, want := range []string{"allow_overwrite = true", "[mtftp]\n  enabled = false"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: --print-config lacks %q:\n%s", args, want, out)
			}
		}
	}
	// A command's own boolean never took a value: the word stays an
	// argument.
	if out, code := mtftpd(t, "serve", "--print-config", "--demo", "false"); code == 0 || !strings.Contains(out, `unexpected argument "false"`) {
		t.Errorf("--demo false: exit %d: %s", code, out)
	}
}

// A command line mtftpd cannot read exits 2 and says what it could not
// read; a command's own refusal exits 1.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "need a command"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"image"}, 2, "need a subcommand (create, info, verify, deploy, capture, initrd)"},
		{[]string{"bench", "nope"}, 2, `unknown subcommand "nope"`},
		{[]string{"get", "--nope", "h", "f"}, 2, "unknown flag: --nope (mtftpd get --help lists the flags)"},
		{[]string{"status", "--interval", "soon"}, 2, `invalid argument "soon"`},
		{[]string{"get", "h"}, 1, "need HOST[:PORT] and REMOTE"},
	} {
		out, code := mtftpd(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

// `mtftpd help` lists every command with its summary, and each command's
// --help prints its usage line and its flags, from the flag set itself:
// the flags the old hand-written usage lacked are there.
func TestHelp(t *testing.T) {
	out, code := mtftpd(t, "help")
	if code != 0 {
		t.Fatalf("help: exit %d: %s", code, out)
	}
	for _, c := range commands {
		if !strings.Contains(out, c.name+" ") || !strings.Contains(out, c.summary) {
			t.Errorf("help lacks %q: %s", c.name, c.summary)
		}
	}
	wantFlags := map[string][]string{
		"get":         {"--multicast", "--min-receivers", "-o, --output", "-q, --quiet"},
		"status":      {"--interval", "--watch", "--recent"},
		"bench mcast": {"--receivers", "--dialect", "--pxe-group"},
		"serve":       {"--config", "--tftp.root", "--mtftp.enabled", "--dhcp.mode"},
		"imaging add": {"--mac", "--server", "--token"},
	}
	for _, c := range commands {
		if c.name == "help" {
			continue // help --help is help
		}
		args := append(strings.Fields(c.name), "--help")
		out, code := mtftpd(t, args...)
		if code != 0 || !strings.HasPrefix(out, "Usage: mtftpd "+c.name+" [flags]") || !strings.Contains(out, "\nFlags:\n") {
			t.Errorf("%v: exit %d:\n%s", args, code, out)
		}
		for _, f := range wantFlags[c.name] {
			if !strings.Contains(out, f) {
				t.Errorf("%v lacks %s:\n%s", args, f, out)
			}
		}
	}
	if out2, _ := mtftpd(t, "help", "get"); out2 == "" || !strings.HasPrefix(out2, "Usage: mtftpd get") {
		t.Errorf("help get: %q", out2)
	}
}

// The README's "Commands" block is `mtftpd help`'s table.
func TestReadmeCommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "## Commands\n\n```\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal(`README.md has no "## Commands" code block`)
	}
	var want strings.Builder
	writeCommands(&want, commands)
	if block != want.String() {
		t.Errorf("README's Commands block differs from `mtftpd help`; it should read:\n%s", want.String())
	}
}

func TestGoStyle(t *testing.T) {
	fs := newFlags("get")
	config.Flags(fs)
	fs.String("cmdline", "", "")
	fs.BoolP("quiet", "q", false, "")
	fs.StringP("output", "o", "", "")
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-cmdline", "-x", "a"}, []string{"--cmdline", "-x", "a"}},
		{[]string{"-cmdline=-x", "-q", "-o", "-quiet"}, []string{"--cmdline=-x", "-q", "-o", "-quiet"}},
		{[]string{"--cmdline", "-quiet", "-quiet"}, []string{"--cmdline", "-quiet", "--quiet"}},
		{[]string{"-qofile", "-nope", "-", "--", "-quiet"}, []string{"-qofile", "-nope", "-", "--", "-quiet"}},
		{[]string{"--tftp.allow_fragments", "true", "-tftp.allow_overwrite", "no"}, []string{"--tftp.allow_fragments=true", "--tftp.allow_overwrite", "no"}},
		{[]string{"-quiet", "false", "--quiet=false"}, []string{"--quiet", "false", "--quiet=false"}},
	} {
		if got := goStyle(fs, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("goStyle(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Progress bars are drawn on terminals only: /dev/null, a character
// device, is none (`2>/dev/null` drew bars when the test was the file
// mode).
func TestIsTerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTerminal(null) {
		t.Errorf("%s is a terminal", os.DevNull)
	}
	if runtime.GOOS != "linux" {
		return
	}
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	if !isTerminal(pty) {
		t.Error("/dev/ptmx is no terminal")
	}
}
