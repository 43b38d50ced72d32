package tftp

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	cases := []struct {
		wire string
		want Request
	}{
		{"\x00\x01pxelinux.0\x00octet\x00", Request{Op: OpRRQ, Filename: "pxelinux.0", Mode: "octet"}},
		{"\x00\x01f\x00OCTET\x00tsize\x000\x00blksize\x001468\x00windowsize\x004\x00",
			Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{{"tsize", "0"}, {"blksize", "1468"}, {"windowsize", "4"}}}},
		{"\x00\x02up.bin\x00netascii\x00tsize\x00123\x00", Request{Op: OpWRQ, Filename: "up.bin", Mode: "netascii", Options: []Option{{"tsize", "123"}}}},
		{"\x00\x01\\boot\\bcd\x00octet\x00multicast\x00\x00", Request{Op: OpRRQ, Filename: `\boot\bcd`, Mode: "octet", Options: []Option{{"multicast", ""}}}},
	}
	for _, c := range cases {
		got, err := ParseRequest([]byte(c.wire))
		if err != nil {
			t.Fatalf("%q: %v", c.wire, err)
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Fatalf("%q: got %+v want %+v", c.wire, *got, c.want)
		}
	}
}

func TestRequestMalformed(t *testing.T) {
	for _, w := range []string{
		"", "\x00", "\x00\x01", "\x00\x01f", "\x00\x01f\x00", "\x00\x01\x00octet\x00",
		"\x00\x01f\x00octet",     // mode without NUL
		"\x00\x03f\x00octet\x00", // DATA opcode
	} {
		if _, err := ParseRequest([]byte(w)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", w, err)
		}
	}
}

// TestRequestLenient: option trouble never costs the request (tftp-hpa
// reads options the same way).
func TestRequestLenient(t *testing.T) {
	cases := map[string][]Option{
		"\x00\x01f\x00octet\x00\x00\x00\x00":                             nil,                  // NUL padding
		"\x00\x01f\x00octet\x00blksize\x00":                              nil,                  // name without value
		"\x00\x01f\x00octet\x00blksize":                                  nil,                  // unterminated name
		"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x001024\x00":    {{"blksize", "512"}}, // repeated: first wins
		"\x00\x01f\x00octet\x00tsize\x000\x00\x00512\x00":                {{"tsize", "0"}},     // empty name ends options
		"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x001432\x00garbage": {{"tsize", "0"}, {"blksize", "1432"}},
	}
	for w, want := range cases {
		r, err := ParseRequest([]byte(w))
		if err != nil {
			t.Errorf("%q: %v", w, err)
			continue
		}
		if !reflect.DeepEqual(r.Options, want) {
			t.Errorf("%q: options %v, want %v", w, r.Options, want)
		}
	}
}

func TestSmallPackets(t *testing.T) {
	a := AppendAck(nil, 65535)
	if n, err := ParseAck(a); err != nil || n != 65535 {
		t.Fatalf("ack %d %v", n, err)
	}
	if _, err := ParseAck(append(a, 0)); err == nil {
		t.Fatal("ACK with trailing byte accepted")
	}
	h := make([]byte, 4)
	PutDataHeader(h, 7)
	b, p, err := ParseData(append(h, "xyz"...))
	if err != nil || b != 7 || string(p) != "xyz" {
		t.Fatalf("data %d %q %v", b, p, err)
	}
	e := AppendError(nil, ErrCodeNotFound, "no\x00such")
	code, msg, err := ParseError(e)
	if err != nil || code != ErrCodeNotFound || msg != "nosuch" {
		t.Fatalf("error %d %q %v", code, msg, err)
	}
	long := AppendError(nil, 0, string(bytes.Repeat([]byte("x"), 2000)))
	if len(long) > MaxRequestLen {
		t.Fatalf("ERROR packet of %d bytes", len(long))
	}
	o := AppendOACK(nil, []Option{{"blksize", "1468"}, {"tsize", "9"}})
	opts, err := ParseOACK(o)
	if err != nil || len(opts) != 2 || opts[1].Value != "9" {
		t.Fatalf("oack %v %v", opts, err)
	}
}

// FuzzParseRequest: parsing never panics, and parse → marshal → parse is
// the identity on anything that parses (modulo the mode's case).
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001408\x00"))
	f.Add([]byte("\x00\x02a\x00netascii\x00"))
	f.Add([]byte("\x00\x01f\x00octet\x00multicast\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		w := r.Marshal(nil)
		r2, err := ParseRequest(w)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", w, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v != %+v", r, r2)
		}
		// Negotiation must never panic, whatever the values.
		Negotiate(r, Limits{MaxBlockSize: 1468, MaxWindow: 64, MaxWindowBytes: 1 << 20}, 12345)
	})
}

func FuzzParseOACK(f *testing.F) {
	f.Add([]byte("\x00\x06blksize\x001468\x00tsize\x00100\x00"))
	f.Add([]byte("\x00\x06multicast\x00239.255.0.1,1758,1\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		opts, err := ParseOACK(b)
		if err != nil {
			return
		}
		w := AppendOACK(nil, opts)
		if !bytes.Equal(w, b) {
			t.Fatalf("round trip %q != %q", w, b)
		}
	})
}

func FuzzSmallPackets(f *testing.F) {
	f.Add([]byte("\x00\x04\x00\x01"))
	f.Add([]byte("\x00\x03\x00\x01hello"))
	f.Add([]byte("\x00\x05\x00\x01not found\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := ParseAck(b); err == nil && !bytes.Equal(AppendAck(nil, n), b) {
			t.Fatalf("ACK round trip %q", b)
		}
		if blk, p, err := ParseData(b); err == nil {
			h := make([]byte, 4)
			PutDataHeader(h, blk)
			if !bytes.Equal(append(h, p...), b) {
				t.Fatalf("DATA round trip %q", b)
			}
		}
		if code, msg, err := ParseError(b); err == nil {
			c2, m2, err := ParseError(AppendError(nil, code, msg))
			if err != nil || c2 != code || (len(msg) < 500 && m2 != msg) {
				t.Fatalf("ERROR round trip %q", b)
			}
		}
	})
}
