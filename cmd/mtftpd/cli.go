package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/spf13/pflag"
)

// command is one subcommand. The dispatch, `mtftpd help`, a group's
// listing (`mtftpd image`) and each command's usage line are all read
// from commands, and a command's flags are listed from its own flag set,
// so no usage text is written twice and none can drift from the code.
type command struct {
	name    string // "get", "image create"
	args    string // the positional arguments, for the usage line
	summary string // one line for `mtftpd help`
	about   string // optional paragraphs for `mtftpd NAME --help`
	run     func(args []string) error
}

// commands is set in init: the run functions reach it through
// parseFlags, which Go would report as an initialization cycle.
var commands []command

func init() {
	commands = []command{
		{"serve", "", "run the server: TFTP, multicast TFTP, DHCP, the HTTP mirror and status pages", serveAbout, runServe},
		{"get", "HOST[:PORT] REMOTE", "download a file by TFTP, or by native multicast with --multicast", "", runGet},
		{"status", "[URL]", "show what a running server is doing: transfers, multicast sessions, reimaging", statusAbout, runStatus},
		{"image create", "SRC", "turn a block device, raw disk file or qemu-img image into an mtftpd disk image (-o IMAGE)", createAbout, runImageCreate},
		{"image info", "IMAGE", "print an image's header", "", runImageInfo},
		{"image verify", "IMAGE", "decode every chunk of an image and check its digests", "", runImageVerify},
		{"image deploy", "SERVER IMAGE DISK", "write an image from a server to a disk by multicast (HTTP or TFTP fallback)", deployAbout, runImageDeploy},
		{"image capture", "DISK URL", "image a disk and stream it to a server's mirror", captureAbout, runImageCapture},
		{"image initrd", "", "build the deploy environment's initrd, with mtftpd as /init (-o FILE)", initrdAbout, runImageInitrd},
		{"imaging add", "", "add a reimaging task to a running server", "", runImagingAdd},
		{"imaging list", "", "list a running server's reimaging tasks, machines and sessions", "", runImagingList},
		{"imaging cancel", "NAME", "cancel a reimaging task", "", runImagingCancel},
		{"agent", "", "run the imaging agent (the deploy environment runs it as PID 1)", agentAbout, runAgent},
		{"bench tftp", "", "TFTP load test: N firmware-like clients download one file from --target", benchTFTPAbout, runBenchTFTP},
		{"bench mcast", "", "multicast load test: N receivers of one dialect download one file together", benchMCastAbout, runBenchMCast},
		{"bench dhcp", "", "DHCP storm: N clients do DISCOVER/OFFER/REQUEST/ACK on --iface (lab networks only)", "", runBenchDHCP},
		{"bench compare", "A.json B.json", "print B/A for the main figures of two bench --json reports", "", runBenchCompare},
		{"bench report", "KIND", "render a benchmark script's JSON run as markdown (docs/benchmarks*.md)", benchReportAbout, runBenchReport},
		{"bench soak", "[FIRST LAST]", "scripts/soak.sh's /metrics reading: a snapshot as a CSV row, or the leak check of two", benchSoakCheckAbout, runBenchSoakCheck},
		{"version", "", "print the version", "", runVersion},
		{"help", "[COMMAND]", "list the commands, or print one command's usage and flags", "", runHelp},
	}
}

// lookup finds the command args start with: "image create …" before
// "image". n is the number of words its name takes.
func lookup(args []string) (c *command, n int) {
	for i := range commands {
		words := strings.Fields(commands[i].name)
		if len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			return &commands[i], len(words)
		}
	}
	return nil, 0
}

// group lists the commands under prefix ("image"), all of them for "".
func group(prefix string) []command {
	var out []command
	for _, c := range commands {
		if prefix == "" || strings.HasPrefix(c.name, prefix+" ") {
			out = append(out, c)
		}
	}
	return out
}

// dispatch runs the command args name. A group's name alone (`mtftpd
// image`) or with help lists the group's commands.
func dispatch(args []string) error {
	if len(args) == 0 {
		writeHelp(os.Stderr, "")
		return usageError{errors.New("need a command")}
	}
	args = slices.Clone(args)
	switch args[0] {
	case "--help", "-h":
		args[0] = "help"
	case "--version", "-v":
		args[0] = "version"
	}
	if c, n := lookup(args); c != nil {
		return c.run(args[n:])
	}
	if g := group(args[0]); len(g) > 0 {
		if len(args) > 1 && (args[1] == "help" || args[1] == "--help" || args[1] == "-h") {
			writeHelp(os.Stdout, args[0])
			return nil
		}
		writeHelp(os.Stderr, args[0])
		if len(args) == 1 {
			return usageError{fmt.Errorf("need a subcommand (%s)", names(g))}
		}
		return usageError{fmt.Errorf("unknown subcommand %q (available: %s)", args[1], names(g))}
	}
	writeHelp(os.Stderr, "")
	return usageError{fmt.Errorf("unknown command %q", args[0])}
}

// usageError is a command line mtftpd cannot read: exit status 2, as
// the standard flag package had it.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func names(cs []command) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.name[strings.LastIndexByte(c.name, ' ')+1:])
	}
	return strings.Join(n, ", ")
}

// writeHelp lists the commands under prefix ("" for all) with their
// summaries.
func writeHelp(w io.Writer, prefix string) {
	if prefix == "" {
		fmt.Fprintln(w, "mtftpd — netboot and multicast imaging server")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Usage: mtftpd COMMAND [flags] [arguments]")
	} else {
		fmt.Fprintf(w, "Usage: mtftpd %s COMMAND [flags] [arguments]\n", prefix)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	writeCommands(w, group(prefix))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags may come before, between or after the arguments; -- ends them.")
	fmt.Fprintln(w, "Run 'mtftpd COMMAND --help' for a command's arguments and flags.")
}

// writeCommands is the table of `mtftpd help`, also the README's
// "Commands" block (TestReadmeCommands keeps them equal).
func writeCommands(w io.Writer, cs []command) {
	width := 0
	for _, c := range cs {
		width = max(width, len(c.name))
	}
	for _, c := range cs {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
}

func runHelp(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") { // help --help
		writeHelp(os.Stdout, "")
		return nil
	}
	if c, _ := lookup(args); c != nil && c.name == "help" {
		writeHelp(os.Stdout, "")
		return nil
	}
	return dispatch(append(args, "--help"))
}

func runVersion(args []string) error {
	fs := newFlags("version")
	if pos, help, err := parseFlags(fs, args); help || err != nil {
		return err
	} else if len(pos) != 0 {
		return fmt.Errorf("unexpected argument %q", pos[0])
	}
	fmt.Println("mtftpd", buildVersion())
	return nil
}

// shortNames are the one-letter flags: each is the shorthand of its long
// name, and --o, --q, --v, the spellings the standard flag package
// accepted, still name them.
var shortNames = map[string]string{"o": "output", "q": "quiet", "v": "verbose"}

// newFlags is the flag set of the command name ("image create"), with
// --help. Interspersed (the pflag default): flags may follow the
// positional arguments.
func newFlags(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false // in the order they are defined: the important ones first
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, n string) pflag.NormalizedName {
		if long, ok := shortNames[n]; ok {
			return pflag.NormalizedName(long)
		}
		return pflag.NormalizedName(n)
	})
	fs.BoolP("help", "h", false, "print this help")
	fs.MarkHidden("help") // the usage it prints says what it is
	fs.Usage = func() { writeUsage(os.Stderr, fs) }
	return fs
}

// writeUsage prints the command's usage line, its about text and its
// flags, as the flag set holds them.
func writeUsage(w io.Writer, fs *pflag.FlagSet) {
	c, _ := lookup(strings.Fields(fs.Name()))
	line := "Usage: mtftpd " + fs.Name() + " [flags]"
	if c != nil && c.args != "" {
		line += " " + c.args
	}
	fmt.Fprintln(w, line)
	if c != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, strings.ToUpper(c.summary[:1])+c.summary[1:]+".")
		if c.about != "" {
			fmt.Fprintln(w)
			fmt.Fprintln(w, strings.TrimSpace(c.about))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags:")
	fmt.Fprint(w, fs.FlagUsagesWrapped(100))
}

// parseFlags parses args into fs and returns the positional arguments.
// help is true when --help was asked for (the usage is printed on
// stdout), which is not an error.
func parseFlags(fs *pflag.FlagSet, args []string) (pos []string, help bool, err error) {
	if err := fs.Parse(goStyle(fs, args)); err != nil {
		return nil, false, usageError{fmt.Errorf("%w (mtftpd %s --help lists the flags)", err, fs.Name())}
	}
	if h, _ := fs.GetBool("help"); h {
		writeUsage(os.Stdout, fs)
		return nil, true, nil
	}
	return fs.Args(), false, nil
}

// goStyle keeps command lines written for the standard flag package
// working: it rewrites -name and -name=value to --name… when name is a
// long flag of fs (one dash was enough), and a boolean config key
// followed by true or false to --key=VALUE. The value of a flag that
// takes one is passed as it is, even when it starts with a dash.
func goStyle(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var f *pflag.Flag
		switch {
		case strings.HasPrefix(a, "--"):
			f = fs.Lookup(name)
		case len(name) == 1:
			f = fs.ShorthandLookup(name)
		default:
			if f = fs.Lookup(name); f != nil {
				a = "-" + a
			}
		}
		if f != nil && !hasValue && i+1 < len(args) {
			switch {
			case f.NoOptDefVal == "":
				out = append(out, a, args[i+1])
				i++
				continue
			case strings.Contains(f.Name, ".") && isBool(args[i+1]):
				// A config key took its value as the next word before
				// (scripts say --mtftp.enabled false); a command's own
				// boolean never did.
				out = append(out, a+"="+args[i+1])
				i++
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

func isBool(s string) bool {
	_, err := strconv.ParseBool(s)
	return err == nil
}

// isTerminal reports whether f is a terminal, where progress bars are
// drawn. /dev/null is a character device too, so the file mode cannot
// tell (`2>/dev/null` would still draw).
func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}
