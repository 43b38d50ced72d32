package privdrop

import (
	"os"
	"slices"
	"testing"
)

func TestLookup(t *testing.T) {
	id, err := Lookup("root", "")
	if err != nil {
		t.Skipf("no root user in the user database: %v", err)
	}
	if id.UID != 0 || id.GID != 0 || !slices.Contains(id.Groups, 0) {
		t.Fatalf("root: %+v", id)
	}
	if byNum, err := Lookup("0", "0"); err != nil || byNum.UID != 0 || byNum.GID != 0 {
		t.Fatalf("numeric uid/gid: %+v %v", byNum, err)
	}
	if _, err := Lookup("no-such-user-mtftpd", ""); err == nil {
		t.Fatal("an unknown user resolved")
	}
	if _, err := Lookup("root", "no-such-group-mtftpd"); err == nil {
		t.Fatal("an unknown group resolved")
	}
}

// TestVerifySelf: the test process's own threads all carry its
// credentials, and a different identity is reported.
func TestVerifySelf(t *testing.T) {
	self := Identity{UID: os.Getuid(), GID: os.Getgid()}
	groups, _ := os.Getgroups()
	self.Groups = groups
	if len(groups) == 0 {
		self.Groups = nil
	}
	if err := Verify(self); err != nil {
		t.Fatalf("own credentials: %v", err)
	}
	other := self
	other.UID++
	if err := Verify(other); err == nil {
		t.Fatal("a wrong uid passed verification")
	}
}

func TestStatusField(t *testing.T) {
	st := []byte("Name:\tx\nUid:\t65534\t65534\t65534\t65534\nGid:\t1\t2\t3\t4\nGroups:\t\n")
	if got := statusField(st, "Uid:"); !slices.Equal(got, []int{65534, 65534, 65534, 65534}) {
		t.Fatalf("Uid: %v", got)
	}
	if got := statusField(st, "Groups:"); len(got) != 0 {
		t.Fatalf("empty Groups: %v", got)
	}
}
