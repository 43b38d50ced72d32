package config

import (
	"strings"
	"testing"
	"time"
)

const imagingBase = `
[tftp]
root = "/srv/tftp"
[http]
listen = "0.0.0.0:8080"
[[dhcp.host]]
mac = "52:54:00:00:00:01"
hostname = "pc01"
[imaging]
dir = "/srv/tftp/images"
kernel = "deploy/vmlinuz"
initrd = "deploy/deploy.cpio.gz"
`

func TestImagingTaskLoads(t *testing.T) {
	c := Defaults()
	err := Parse([]byte(imagingBase+`
admin_token = "0123456789abcdef"
state_file = "/var/lib/mtftpd/imaging.json"
cmdline = "console=ttyS0"
[[imaging.task]]
name = "room-101"
action = "deploy"
image = "room.img"
macs = ["52:54:00:12:34:56"]
hosts = ["pc01"]
after = "poweroff"
verify = false
retries = 0
min_receivers = 3
max_wait = "30s"
settle = "2s"
[[imaging.task]]
name = "golden"
action = "capture"
image = "golden.img"
macs = ["52:54:00:aa:bb:cc"]
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	task := c.Imaging.Tasks[0]
	if task.VerifyOrDefault() || task.RetriesOrDefault() != 0 || task.MaxWait.Duration != 30*time.Second || task.AfterOrDefault() != "poweroff" {
		t.Errorf("task 0: %+v", task)
	}
	if g := c.Imaging.Tasks[1]; !g.VerifyOrDefault() || g.RetriesOrDefault() != DefaultTaskRetries || g.AfterOrDefault() != "reboot" {
		t.Errorf("task 1 defaults: %+v", g)
	}
	// --print-config shows the tasks and loads back to the same config.
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	c2 := Defaults()
	if err := Parse(b, &c2); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if len(Changed(c, c2)) != 0 {
		t.Fatalf("round trip changed %v\n%s", Changed(c, c2), b)
	}
	c2.Imaging.Tasks[0].Image = "other.img"
	if ch := Changed(c, c2); len(ch) != 1 || ch[0] != "imaging.task" {
		t.Errorf("Changed = %v, want [imaging.task]", ch)
	}
}

func TestImagingErrorsNameTheKey(t *testing.T) {
	task := "\n[[imaging.task]]\nname = \"t\"\naction = \"deploy\"\nimage = \"room.img\"\nmacs = [\"52:54:00:12:34:56\"]\n"
	for in, want := range map[string]string{
		task + "after = \"halt\"":   "imaging.task[0].after",
		task + "retries = 11":       "imaging.task[0].retries",
		task + "disk = \"sda\"":     "imaging.task[0].disk",
		task + "max_wait = \"2h\"":  "imaging.task[0].max_wait",
		task + "hosts = [\"pc99\"]": "imaging.task[0].hosts[0]",
		task + task:                 "imaging.task[1].name",
		"\n[[imaging.task]]\nname = \"a b\"\naction = \"deploy\"":                                                                                                                          "imaging.task[0].name",
		"\n[[imaging.task]]\nname = \"t\"\naction = \"wipe\"":                                                                                                                              "imaging.task[0].action",
		"\n[[imaging.task]]\nname = \"t\"\naction = \"deploy\"\nimage = \"../etc/passwd\"\nunknown = true":                                                                                 "imaging.task[0].image",
		"\n[[imaging.task]]\nname = \"t\"\naction = \"deploy\"\nimage = \"x.img\"":                                                                                                         "a deploy task names its machines",
		"\n[[imaging.task]]\nname = \"t\"\naction = \"capture\"\nimage = \"x.img\"\nmacs = [\"52:54:00:12:34:56\", \"52:54:00:12:34:57\"]":                                                 "imaging.task[0].macs: a capture task names exactly one",
		"\n[[imaging.task]]\nname = \"t\"\naction = \"deploy\"\nimage = \"x.img\"\nmacs = [\"52:54:00\"]":                                                                                  "imaging.task[0].macs[0]",
		"\n[[imaging.task]]\nname = \"a\"\naction = \"deploy\"\nimage = \"x.img\"\nunknown = true\n[[imaging.task]]\nname = \"b\"\naction = \"deploy\"\nimage = \"x.img\"\nunknown = true": "imaging.task[1].unknown",
		task + "\n[[imaging.task]]\nname = \"u\"\naction = \"deploy\"\nimage = \"room.img\"\nmacs = [\"52-54-00-12-34-56\"]":                                                               "imaging.task[1].macs[0]: 52:54:00:12:34:56 is also named by imaging.task[0]",
		"\ncmdline = \"quiet\\nMENU HIDDEN\"":   "imaging.cmdline",
		"\nadmin_token = \"short\"":             "imaging.admin_token",
		"\nkernel = \"/deploy/vmlinuz\"" + task: "imaging.kernel",
		"\nstate_file = \"imaging.json\"":       "imaging.state_file",
		"\nmax_unknown = -1":                    "imaging.max_unknown",
	} {
		c := Defaults()
		in = imagingBase + in
		if strings.HasPrefix(in[len(imagingBase):], "\nkernel") {
			in = strings.Replace(in, "kernel = \"deploy/vmlinuz\"\n", "", 1) // the case's own kernel only
		}
		err := Parse([]byte(in), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", in, err, want)
		}
	}
	// Without imaging.dir, task keys are errors.
	c := Defaults()
	c.Imaging.AdminToken = "0123456789abcdef"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "imaging.admin_token: is set but imaging.dir is not") {
		t.Errorf("admin_token without dir: %v", err)
	}
	// An admin token needs the deploy environment (tasks may be added).
	c = Defaults()
	if err := Parse([]byte("[tftp]\nroot = \"/srv/tftp\"\n[http]\nlisten = \"0.0.0.0:8080\"\n[imaging]\ndir = \"/srv/tftp/images\"\nadmin_token = \"0123456789abcdef\"\n"), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "imaging.kernel: must be set") {
		t.Errorf("admin_token without kernel: %v", err)
	}
}
