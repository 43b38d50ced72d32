// Package counters turns a struct of atomic counters into name/value
// pairs, so each package keeps its counters as plain typed fields (cheap
// to bump on the hot path) and metrics read them all the same way.
//
// It never writes to the counters it reads.
package counters

import (
	"reflect"
	"sync/atomic"
)

// Value is one named counter.
type Value struct {
	Name  string
	Value int64
	// Gauge marks a level that goes up and down (an atomic.Int64 field,
	// such as transfers in flight); atomic.Uint64 fields only grow.
	Gauge bool
}

// Snapshot reads every atomic.Uint64 and atomic.Int64 field of the struct
// that ptr points to, in field order, named by the field. Other fields are
// skipped, and so are unexported ones. Each field is read atomically; the set is not one instant.
func Snapshot(ptr any) []Value {
	v := reflect.ValueOf(ptr).Elem()
	t := v.Type()
	out := make([]Value, 0, t.NumField())
	for i := range t.NumField() {
		if !t.Field(i).IsExported() {
			continue
		}
		switch f := v.Field(i).Addr().Interface().(type) {
		case *atomic.Uint64:
			out = append(out, Value{Name: t.Field(i).Name, Value: int64(f.Load())})
		case *atomic.Int64:
			out = append(out, Value{Name: t.Field(i).Name, Value: f.Load(), Gauge: true})
		}
	}
	return out
}
