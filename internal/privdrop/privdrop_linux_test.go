package privdrop

import (
	"os"
	"slices"
	"testing"
)

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
