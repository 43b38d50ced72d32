package privdrop

import (
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
