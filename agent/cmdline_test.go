package agent

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Cmdline
		mac      string
		err      bool
	}{
		{name: "full", in: "BOOT_IMAGE=vmlinuz console=ttyS0 mtftpd.http=http://10.0.0.1:8069/ mtftpd.server=10.0.0.1:69 mtftpd.task=room-101 mtftpd.token=0123456789abcdef0123456789abcdef mtftpd.mac=52:54:00:12:34:56 quiet\n",
			want: Cmdline{HTTP: "http://10.0.0.1:8069", Server: "10.0.0.1:69", Task: "room-101", Token: "0123456789abcdef0123456789abcdef"}, mac: "52:54:00:12:34:56"},
		{name: "bootif", in: "mtftpd.http=http://h mtftpd.token=t BOOTIF=01-52-54-00-aa-bb-cc",
			want: Cmdline{HTTP: "http://h", Token: "t"}, mac: "52:54:00:aa:bb:cc"},
		{name: "mac wins over bootif", in: "BOOTIF=01-52-54-00-aa-bb-cc mtftpd.http=http://h mtftpd.token=t mtftpd.mac=52-54-00-00-00-01",
			want: Cmdline{HTTP: "http://h", Token: "t"}, mac: "52:54:00:00:00:01"},
		{name: "no mac", in: "mtftpd.http=https://h/x mtftpd.token=t",
			want: Cmdline{HTTP: "https://h/x", Token: "t"}},
		{name: "last wins, quotes", in: `mtftpd.http=http://a mtftpd.token=t mtftpd.http="http://b" "mtftpd.task=a b"`,
			want: Cmdline{HTTP: "http://b", Token: "t", Task: "a b"}},
		{name: "no http", in: "mtftpd.token=t", err: true},
		{name: "no token", in: "mtftpd.http=http://h", err: true},
		{name: "bad url", in: "mtftpd.http=ftp://h mtftpd.token=t", err: true},
		{name: "bad url 2", in: "mtftpd.http=h:80 mtftpd.token=t", err: true},
		{name: "bad mac", in: "mtftpd.http=http://h mtftpd.token=t mtftpd.mac=zz", err: true},
		{name: "long mac", in: "mtftpd.http=http://h mtftpd.token=t mtftpd.mac=00:00:00:00:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:00", err: true},
		{name: "bootif not ethernet", in: "mtftpd.http=http://h mtftpd.token=t BOOTIF=06-52-54-00-aa-bb-cc", err: true},
		{name: "bootif no type", in: "mtftpd.http=http://h mtftpd.token=t BOOTIF=52:54:00:aa:bb:cc", err: true},
		{name: "empty", in: "", err: true},
		{name: "command-line task", in: "mtftpd.http=http://h mtftpd.image=images/room.img mtftpd.disk=/dev/sda mtftpd.after=poweroff",
			want: Cmdline{HTTP: "http://h", Image: "images/room.img", Disk: "/dev/sda", After: "poweroff"}},
		{name: "command-line task without a disk", in: "mtftpd.http=http://h mtftpd.image=images/room.img", err: true},
		{name: "command-line task outside the root", in: "mtftpd.http=http://h mtftpd.image=../etc/shadow mtftpd.disk=/dev/sda", err: true},
		{name: "command-line task absolute", in: "mtftpd.http=http://h mtftpd.image=/images/room.img mtftpd.disk=/dev/sda", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCmdline(tc.in)
			if tc.err {
				if !errors.Is(err, ErrCmdline) {
					t.Fatalf("err = %v, want ErrCmdline", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mac := got.MAC.String()
			got.MAC = nil
			if !reflect.DeepEqual(got, tc.want) || mac != tc.mac {
				t.Fatalf("got %+v mac %q, want %+v mac %q", got, mac, tc.want, tc.mac)
			}
		})
	}
}

// FuzzParseCmdline: any text parses or fails with ErrCmdline, and what
// parses reads back the same from its String.
func FuzzParseCmdline(f *testing.F) {
	f.Add("mtftpd.http=http://10.0.0.1:8069 mtftpd.server=10.0.0.1:69 mtftpd.task=t mtftpd.token=abc mtftpd.mac=52:54:00:12:34:56")
	f.Add("mtftpd.http=http://h mtftpd.token=t BOOTIF=01-52-54-00-aa-bb-cc")
	f.Add(`"mtftpd.http=http://h" mtftpd.token="a b"`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			if !errors.Is(err, ErrCmdline) {
				t.Fatalf("error not ErrCmdline: %v", err)
			}
			return
		}
		c2, err := ParseCmdline(c.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", c.String(), err)
		}
		if c.String() != c2.String() {
			t.Fatalf("round trip: %q -> %q", c.String(), c2.String())
		}
	})
}
