package privdrop

import "testing"

func TestParseCaps(t *testing.T) {
	st := "Name:\tmtftpd\nCapInh:\t0000000000000400\nCapPrm:\t0000000000000400\nCapEff:\t0000000000000400\nCapBnd:\t0000000000000400\nCapAmb:\t0000000000000400\nNoNewPrivs:\t1\n"
	c, err := ParseCaps(st)
	if err != nil || c.Permitted != 1<<10 || c.Ambient != 1<<10 || !c.NoNewPrivs || c.Empty() {
		t.Fatalf("ParseCaps: %+v %v", c, err)
	}
	if _, err := ParseCaps("Name:\tx\n"); err == nil {
		t.Fatal("a status without capability sets parsed")
	}
	if _, err := ParseCaps("CapInh:\tzz\nCapPrm:\t0\nCapEff:\t0\nCapAmb:\t0\n"); err == nil {
		t.Fatal("a bad mask parsed")
	}
}
