package config

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Imaging configures disk images (docs/image-format.md) and reimaging
// tasks (docs/imaging.md): where images live, who may capture new ones,
// the deploy environment machines are handed and the tasks that name
// them. The directory lies inside the served root, so an image is served
// by TFTP, HTTP and multicast under its path there (dir = /srv/tftp/images
// serves images/<name>).
type Imaging struct {
	Dir          string `toml:"dir" help:"directory of disk images inside tftp.root (and http.root); captures land here; empty disables captures and tasks"`
	UploadToken  string `toml:"upload_token" help:"token a capture must present (HTTP Authorization: Bearer); empty refuses every capture"`
	MaxImageSize int64  `toml:"max_image_size" help:"largest image file (compressed, in bytes) a capture may write"`
	AdminToken   string `toml:"admin_token" help:"token that POST/DELETE /api/imaging (mtftpd imaging add|cancel) must present; empty refuses task changes by HTTP"`
	StateFile    string `toml:"state_file" help:"task and machine state (JSON, written atomically); empty keeps it in memory"`
	Kernel       string `toml:"kernel" help:"deploy environment kernel, a name under tftp.root (e.g. deploy/vmlinuz)"`
	Initrd       string `toml:"initrd" help:"deploy environment initrd (mtftpd image initrd), a name under tftp.root"`
	Cmdline      string `toml:"cmdline" help:"more kernel arguments for the deploy kernel, after mtftpd's own (e.g. console=ttyS0)"`
	MaxUnknown   int    `toml:"max_unknown" help:"machine records that tasks with unknown = true may create (a bound against MAC floods)"`

	Tasks []ImagingTask `toml:"task" reload:"yes"`
}

// ImagingTask is one [[imaging.task]], and the JSON body of POST
// /api/imaging/tasks: a deploy of an image to the machines it names, or a
// capture of one machine's disk into an image (docs/imaging.md). The
// imaging package checks the same rules (Check) for tasks added at run
// time.
type ImagingTask struct {
	Name         string   `toml:"name" json:"name"`
	Action       string   `toml:"action" json:"action"`
	Image        string   `toml:"image" json:"image"`
	MACs         []string `toml:"macs" json:"macs,omitempty"`
	Hosts        []string `toml:"hosts" json:"hosts,omitempty"`
	Unknown      bool     `toml:"unknown" json:"unknown,omitempty"`
	Disk         string   `toml:"disk" json:"disk,omitempty"`
	After        string   `toml:"after" json:"after,omitempty"`
	Verify       *bool    `toml:"verify" json:"verify,omitempty"`   // absent = true
	Retries      *int     `toml:"retries" json:"retries,omitempty"` // absent = DefaultTaskRetries
	MinReceivers int      `toml:"min_receivers" json:"min_receivers,omitempty"`
	MaxWait      Duration `toml:"max_wait" json:"max_wait,omitzero"`
	Settle       Duration `toml:"settle" json:"settle,omitzero"`
}

// DefaultTaskRetries is a task's retries when it does not say: a machine
// gets the deploy environment at most three times.
const DefaultTaskRetries = 2

// Task limits, against a file or an API client that asks too much: a
// room is tens to hundreds of machines; a state file stays small.
const (
	MaxTaskMACs    = 4096
	MaxTaskRetries = 10
	maxCmdline     = 1024
)

// MaxUnknownLimit caps imaging.max_unknown.
const MaxUnknownLimit = 65536

var (
	taskName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	imageName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	diskPath  = regexp.MustCompile(`^/dev/[A-Za-z0-9._/-]{1,64}$`)
)

// VerifyOrDefault is Verify, true when absent.
func (t ImagingTask) VerifyOrDefault() bool { return t.Verify == nil || *t.Verify }

// RetriesOrDefault is Retries, DefaultTaskRetries when absent.
func (t ImagingTask) RetriesOrDefault() int {
	if t.Retries == nil {
		return DefaultTaskRetries
	}
	return *t.Retries
}

// AfterOrDefault is After, "reboot" when empty.
func (t ImagingTask) AfterOrDefault() string {
	if t.After == "" {
		return "reboot"
	}
	return t.After
}

// Check returns the task's problems, each with the key it is about
// ("after", "macs[2]"); hosts are the [[dhcp.host]] hostnames a task
// may name. What needs the file system (the image exists) is the
// imaging package's.
func (t ImagingTask) Check(hosts map[string]bool) []FieldError {
	var out []FieldError
	bad := func(key, format string, args ...any) {
		out = append(out, FieldError{key, fmt.Sprintf(format, args...)})
	}
	if !taskName.MatchString(t.Name) || t.Name == "." || t.Name == ".." {
		bad("name", "%q is not 1 to 64 letters, digits, '.', '_' or '-'", t.Name)
	}
	if !imageName.MatchString(t.Image) {
		bad("image", "%q is not an image name in imaging.dir (letters, digits, '.', '_', '-'; no leading dot)", t.Image)
	}
	if len(t.MACs) > MaxTaskMACs {
		bad("macs", "%d MACs: at most %d", len(t.MACs), MaxTaskMACs)
	}
	seen := map[string]bool{}
	for i, m := range t.MACs {
		mac, err := net.ParseMAC(m)
		if err != nil || len(mac) != 6 {
			bad(fmt.Sprintf("macs[%d]", i), "%q is not an Ethernet MAC like 52:54:00:12:34:56", m)
		} else if seen[mac.String()] {
			bad(fmt.Sprintf("macs[%d]", i), "%s is listed twice", mac)
		} else {
			seen[mac.String()] = true
		}
	}
	if len(t.Hosts) > MaxTaskMACs {
		bad("hosts", "%d hosts: at most %d", len(t.Hosts), MaxTaskMACs)
	}
	for i, h := range t.Hosts {
		if !hosts[h] {
			bad(fmt.Sprintf("hosts[%d]", i), "%q is not the hostname of a [[dhcp.host]]", h)
		}
	}
	switch t.Action {
	case "deploy":
		if len(t.MACs) == 0 && len(t.Hosts) == 0 && !t.Unknown {
			bad("macs", "a deploy task names its machines: macs, hosts or unknown = true")
		}
	case "capture":
		if len(t.MACs) != 1 || len(t.Hosts) > 0 || t.Unknown {
			bad("macs", "a capture task names exactly one machine by MAC (and no hosts, no unknown): it has %d MACs, %d hosts", len(t.MACs), len(t.Hosts))
		}
	default:
		bad("action", "%q is not deploy or capture", t.Action)
	}
	if t.Disk != "" && (!diskPath.MatchString(t.Disk) || strings.Contains(t.Disk, "..")) {
		bad("disk", "%q is not empty (the first disk large enough) or a device like /dev/vda", t.Disk)
	}
	switch t.After {
	case "", "reboot", "poweroff", "wait":
	default:
		bad("after", "%q is not reboot, poweroff or wait", t.After)
	}
	if r := t.RetriesOrDefault(); r < 0 || r > MaxTaskRetries {
		bad("retries", "%d is outside 0..%d", r, MaxTaskRetries)
	}
	if t.MinReceivers < 0 || t.MinReceivers > 10000 {
		bad("min_receivers", "%d is outside 0..10000", t.MinReceivers)
	}
	if t.MaxWait.Duration < 0 || t.MaxWait.Duration > time.Hour {
		bad("max_wait", "%v is outside 0s..1h", t.MaxWait.Duration)
	}
	if t.Settle.Duration < 0 || t.Settle.Duration > time.Hour {
		bad("settle", "%v is outside 0s..1h", t.Settle.Duration)
	}
	return out
}

// FieldError is a problem with one key.
type FieldError struct {
	Key, Problem string
}

func (e FieldError) Error() string { return e.Key + ": " + e.Problem }

// Hostnames is the set of [[dhcp.host]] hostnames.
func (c *Config) Hostnames() map[string]bool {
	out := map[string]bool{}
	for _, h := range c.DHCP.Hosts {
		if h.Hostname != "" {
			out[h.Hostname] = true
		}
	}
	return out
}

// ImagingPrefix is the path of the imaging dir under root ("images"), the
// name prefix its images are served under.
func ImagingPrefix(root, dir string) (string, bool) {
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(dir))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

// CheckCmdline reports what is wrong with extra kernel arguments: they
// are written into boot loader configs, so a line break would add a
// command of its own.
func CheckCmdline(s string) error {
	if len(s) > maxCmdline {
		return fmt.Errorf("is %d bytes: at most %d", len(s), maxCmdline)
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("%q holds a character that is not printable ASCII (a line break would add a boot loader command)", s)
		}
	}
	return nil
}

// checkTFTPName reports what is wrong with a name under tftp.root.
func checkTFTPName(s string) error {
	if s == "" {
		return fmt.Errorf("must be set (a name under tftp.root)")
	}
	if strings.HasPrefix(s, "/") || strings.Contains(s, "\\") || s != filepath.ToSlash(filepath.Clean(s)) || strings.HasPrefix(s, "../") || s == ".." {
		return fmt.Errorf("%q is not a clean name under tftp.root without a leading slash (like deploy/vmlinuz)", s)
	}
	return CheckCmdline(s)
}

func (c *Config) validateImaging(bad func(field, format string, args ...any)) {
	m := c.Imaging
	if m.MaxImageSize < 1<<20 || m.MaxImageSize > 1<<50 {
		bad("imaging.max_image_size", "%d is outside 1 MiB..1 PiB", m.MaxImageSize)
	}
	if m.MaxUnknown < 0 || m.MaxUnknown > MaxUnknownLimit {
		bad("imaging.max_unknown", "%d is outside 0..%d", m.MaxUnknown, MaxUnknownLimit)
	}
	if err := CheckCmdline(m.Cmdline); err != nil {
		bad("imaging.cmdline", "%v", err)
	}
	if m.Dir == "" {
		for _, k := range []struct{ key, v string }{
			{"imaging.upload_token", m.UploadToken}, {"imaging.admin_token", m.AdminToken}, {"imaging.state_file", m.StateFile},
		} {
			if k.v != "" {
				bad(k.key, "is set but imaging.dir is not: images and tasks need a directory")
			}
		}
		if len(m.Tasks) > 0 {
			bad("imaging.task", "tasks are set but imaging.dir is not")
		}
		return
	}
	if !filepath.IsAbs(m.Dir) {
		bad("imaging.dir", "%q is not an absolute path", m.Dir)
		return
	}
	if IsURL(c.TFTP.Root) {
		bad("imaging.dir", "needs a local tftp.root (it is the origin %s)", c.TFTP.Root)
	} else if _, ok := ImagingPrefix(c.TFTP.Root, m.Dir); !ok {
		bad("imaging.dir", "%q is not inside tftp.root %q: images would not be served", m.Dir, c.TFTP.Root)
	}
	if c.HTTP.Root != "" && !IsURL(c.HTTP.Root) {
		if p1, _ := ImagingPrefix(c.TFTP.Root, m.Dir); p1 != "" {
			if p2, ok := ImagingPrefix(c.HTTP.Root, m.Dir); !ok || p2 != p1 {
				bad("imaging.dir", "%q must be at the same path under http.root %q as under tftp.root (%s)", m.Dir, c.HTTP.Root, p1)
			}
		}
	}
	for _, k := range []struct{ key, v string }{{"imaging.upload_token", m.UploadToken}, {"imaging.admin_token", m.AdminToken}} {
		if k.v == "" {
			continue
		}
		if len(k.v) < 16 {
			bad(k.key, "is %d characters: use at least 16 (e.g. openssl rand -hex 16)", len(k.v))
		}
		if !c.HTTP.Listen.IsValid() {
			bad(k.key, "is used over HTTP: set http.listen")
		}
	}
	if m.StateFile != "" && !filepath.IsAbs(m.StateFile) {
		bad("imaging.state_file", "%q is not an absolute path", m.StateFile)
	}
	if len(m.Tasks) == 0 && m.AdminToken == "" {
		return // no tasks now, and none can be added
	}
	// Tasks hand machines the deploy environment and its agent talks to
	// the mirror.
	if err := checkTFTPName(m.Kernel); err != nil {
		bad("imaging.kernel", "%v", err)
	}
	if err := checkTFTPName(m.Initrd); err != nil {
		bad("imaging.initrd", "%v", err)
	}
	if !c.HTTP.Listen.IsValid() {
		bad("imaging.task", "the deploy agent talks to the HTTP mirror: set http.listen")
	}
	validateImagingTasks(bad, m.Tasks, c.Hostnames())
}

// validateImagingTasks checks each task (ImagingTask.Check against the
// [[dhcp.host]] names hosts) and across tasks: names unique, a MAC in one
// task only, and one task at most taking the unknown machines.
func validateImagingTasks(bad func(field, format string, args ...any), tasks []ImagingTask, hosts map[string]bool) {
	names := map[string]int{}
	macs := map[string]int{}
	unknown := -1
	for i, t := range tasks {
		key := fmt.Sprintf("imaging.task[%d]", i)
		for _, e := range t.Check(hosts) {
			bad(key+"."+e.Key, "%s", e.Problem)
		}
		if j, dup := names[t.Name]; dup {
			bad(key+".name", "%q is also imaging.task[%d]'s name", t.Name, j)
		}
		names[t.Name] = i
		for k, s := range t.MACs {
			if mac, err := net.ParseMAC(s); err == nil {
				if j, dup := macs[mac.String()]; dup && j != i {
					bad(fmt.Sprintf("%s.macs[%d]", key, k), "%s is also named by imaging.task[%d]: a machine is in one task at a time", mac, j)
				}
				macs[mac.String()] = i
			}
		}
		if t.Unknown {
			if unknown >= 0 {
				bad(key+".unknown", "imaging.task[%d] already takes the unknown machines", unknown)
			}
			unknown = i
		}
	}
}
