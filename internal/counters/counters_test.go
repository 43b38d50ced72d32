package counters

import (
	"reflect"
	"sync/atomic"
	"testing"
)

func TestSnapshot(t *testing.T) {
	var c struct {
		A    atomic.Uint64
		B    atomic.Int64
		skip string
		C    atomic.Uint64
	}
	c.A.Add(3)
	c.B.Add(-2)
	c.C.Add(1 << 40)
	got := Snapshot(&c)
	want := []Value{{"A", 3}, {"B", -2}, {"C", 1 << 40}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
