package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// readAll drains r with Read calls of exactly chunk bytes, checking the
// "fills p fully unless EOF" contract on the way.
func readAll(t testing.TB, r *NetasciiReader, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("reader never reached EOF")
		}
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			// Every later call must keep saying EOF with no bytes.
			if n2, err2 := r.Read(buf); n2 != 0 || err2 != io.EOF {
				t.Fatalf("Read after EOF = %d, %v; want 0, EOF", n2, err2)
			}
			return out
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if n != chunk {
			t.Fatalf("Read returned %d of %d bytes without EOF", n, chunk)
		}
	}
}

// decodeNetascii is the receiver's side (CR LF → LF, CR NUL → CR), strict:
// any other byte after CR, or a CR at the end, is an encoding error.
func decodeNetascii(b []byte) ([]byte, error) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\r' {
			out = append(out, b[i])
			continue
		}
		if i+1 == len(b) {
			return nil, errors.New("trailing CR")
		}
		i++
		switch b[i] {
		case '\n':
			out = append(out, '\n')
		case 0:
			out = append(out, '\r')
		default:
			return nil, fmt.Errorf("CR followed by %#x at %d", b[i], i)
		}
	}
	return out, nil
}

func TestNetasciiReader(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abc", "abc"},
		{"a\nb", "a\r\nb"},
		{"a\rb", "a\r\x00b"},
		{"\r\n", "\r\x00\r\n"},
		{"\n", "\r\n"},
		{"\r", "\r\x00"},
		{"\n\n\r\r", "\r\n\r\n\r\x00\r\x00"},
		{"x\x00y", "x\x00y"}, // NUL in the file passes through unchanged
		{"line one\nline two\n", "line one\r\nline two\r\n"},
	}
	var r NetasciiReader
	for _, tt := range tests {
		r.Reset([]byte(tt.in))
		whole := readAll(t, &r, 4096)
		if string(whole) != tt.want {
			t.Errorf("netascii(%q) = %q, want %q", tt.in, whole, tt.want)
		}
		if got := NetasciiLen([]byte(tt.in)); got != int64(len(tt.want)) {
			t.Errorf("NetasciiLen(%q) = %d, want %d", tt.in, got, len(tt.want))
		}
		// Block boundaries anywhere, including between CR and its
		// second byte, must not change the output.
		for chunk := 1; chunk <= 7; chunk++ {
			r.Reset([]byte(tt.in))
			if got := readAll(t, &r, chunk); !bytes.Equal(got, whole) {
				t.Errorf("netascii(%q) read in %d-byte chunks = %q, want %q", tt.in, chunk, got, whole)
			}
		}
	}
}

func TestNetasciiReaderEdges(t *testing.T) {
	var zero NetasciiReader
	if n, err := zero.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("zero reader Read = %d, %v; want 0, EOF", n, err)
	}

	var r NetasciiReader
	r.Reset([]byte("\n"))
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) with data left = %d, %v; want 0, nil", n, err)
	}
	// Take the CR of CR LF, leaving LF pending, then Reset: the pending
	// byte belongs to the old source and must be dropped.
	p := make([]byte, 1)
	if n, err := r.Read(p); n != 1 || err != nil || p[0] != '\r' {
		t.Fatalf("first Read = %d, %v, %q; want 1, nil, CR", n, err, p[:n])
	}
	r.Reset([]byte("x"))
	if got := readAll(t, &r, 8); string(got) != "x" {
		t.Errorf("after Reset read %q, want %q", got, "x")
	}

	// EOF comes with the last bytes when they fit exactly.
	r.Reset([]byte("ab\n"))
	p = make([]byte, 4)
	if n, err := r.Read(p); n != 4 || err != io.EOF || string(p) != "ab\r\n" {
		t.Errorf("exact-fit Read = %d, %v, %q; want 4, EOF, %q", n, err, p[:n], "ab\r\n")
	}
}

func TestNetasciiReaderNoAlloc(t *testing.T) {
	src := bytes.Repeat([]byte("label linux\r\n  kernel vmlinuz\n"), 100)
	buf := make([]byte, 512)
	var r NetasciiReader
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(src)
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	})
	if allocs != 0 {
		t.Errorf("NetasciiReader allocated %v times per file, want 0", allocs)
	}
}

func FuzzNetascii(f *testing.F) {
	for _, s := range []string{"", "a\nb", "a\rb", "\r\n", "\n\r", "\r\r\n\n", "\x00\r\x00"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		var r NetasciiReader
		r.Reset(in)
		out := readAll(t, &r, 1+int(chunk%64))
		if int64(len(out)) != NetasciiLen(in) {
			t.Fatalf("converted %d bytes to %d, NetasciiLen says %d", len(in), len(out), NetasciiLen(in))
		}
		back, err := decodeNetascii(out)
		if err != nil {
			t.Fatalf("output %q is not valid netascii: %v", out, err)
		}
		if !bytes.Equal(back, in) {
			t.Fatalf("round trip %q -> %q -> %q", in, out, back)
		}
	})
}

func BenchmarkNetasciiReader(b *testing.B) {
	src := bytes.Repeat([]byte("label linux\n  kernel vmlinuz initrd=initrd.img\n"), 1<<14)
	buf := make([]byte, 1468) // EDK2's usual blksize
	want := NetasciiLen(src)
	var r NetasciiReader
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(src)
		var total int64
		for {
			n, err := r.Read(buf)
			total += int64(n)
			if err != nil {
				break
			}
		}
		if total != want {
			b.Fatalf("read %d bytes, want %d", total, want)
		}
	}
}
