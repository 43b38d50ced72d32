package udpio

import (
	"slices"
	"testing"
)

func TestParseKernelRelease(t *testing.T) {
	tests := []struct {
		in               string
		major, minor, rc int
		ok               bool
	}{
		{"6.18.44-fc-v657", 6, 18, 0, true},
		{"7.1.0-rc4", 7, 1, 4, true},
		{"7.1-rc4", 7, 1, 4, true},
		{"7.1-rc5-00012-gabcdef", 7, 1, 5, true},
		{"7.0.14-pve", 7, 0, 0, true},
		{"7.1.0", 7, 1, 0, true},
		{"6.1.0-18-amd64", 6, 1, 0, true},
		{"5.15.0-1051-azure", 5, 15, 0, true},
		{"4.19.0", 4, 19, 0, true},
		{"6.8.0-rcX", 6, 8, 0, true},
		{"6.8.0-1-rc3", 6, 8, 0, true}, // "-rc" only counts right after the version
		{"6", 0, 0, 0, false},
		{"6.", 0, 0, 0, false},
		{"", 0, 0, 0, false},
		{"linux", 0, 0, 0, false},
		{"v6.1", 0, 0, 0, false},
		{"99999999.1", 0, 0, 0, false},
	}
	for _, tt := range tests {
		major, minor, rc, ok := ParseKernelRelease(tt.in)
		if major != tt.major || minor != tt.minor || rc != tt.rc || ok != tt.ok {
			t.Errorf("ParseKernelRelease(%q) = %d, %d, rc%d, %t; want %d, %d, rc%d, %t",
				tt.in, major, minor, rc, ok, tt.major, tt.minor, tt.rc, tt.ok)
		}
	}
}

func TestGSOEqualTailBuggy(t *testing.T) {
	tests := []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v657", false},
		{"6.19.0", false},
		{"6.17.0-41-generic", false},
		{"7.0-rc1", true}, // b10b446 landed in v7.0-rc1
		{"7.0.0", true},
		{"7.0.2-6-pve", true},
		{"7.0.14-pve", true},
		{"7.1.0-rc1", true},
		{"7.1-rc4", true},
		{"7.1.0-rc5", false}, // 78effd8 + 5f17ae0
		{"7.1.0", false},
		{"7.1.3", false},
		{"7.2.0", false},
		{"8.0.0", false},
		{"garbage", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := gsoEqualTailBuggy(tt.release); got != tt.want {
			t.Errorf("gsoEqualTailBuggy(%q) = %t, want %t", tt.release, got, tt.want)
		}
	}
}

func TestCapsFromEnv(t *testing.T) {
	full := Caps{MMsg: true, GSO: true, GSOMaxSegments: 64, KernelRelease: "6.18.44"}
	tests := []struct {
		name      string
		env       map[string]string
		probed    Caps
		mmsg, gso bool
	}{
		{"none", nil, full, true, true},
		{"gso off", map[string]string{"MTFTPD_DISABLE_GSO": "1"}, full, true, false},
		{"gso off true", map[string]string{"MTFTPD_DISABLE_GSO": "true"}, full, true, false},
		{"gso 0", map[string]string{"MTFTPD_DISABLE_GSO": "0"}, full, true, true},
		{"gso junk", map[string]string{"MTFTPD_DISABLE_GSO": "yes please"}, full, true, true},
		{"mmsg off implies gso off", map[string]string{"MTFTPD_DISABLE_MMSG": "1"}, full, false, false},
		{"both", map[string]string{"MTFTPD_DISABLE_MMSG": "1", "MTFTPD_DISABLE_GSO": "1"}, full, false, false},
		{"kernel without gso", nil, Caps{MMsg: true}, true, false},
		{"kernel without mmsg", nil, Caps{GSO: true}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := capsFromEnv(func(k string) string { return tt.env[k] }, tt.probed)
			if got.MMsg != tt.mmsg || got.GSO != tt.gso {
				t.Errorf("got mmsg=%t gso=%t, want mmsg=%t gso=%t", got.MMsg, got.GSO, tt.mmsg, tt.gso)
			}
			if got.KernelRelease != tt.probed.KernelRelease || got.GSOMaxSegments != tt.probed.GSOMaxSegments {
				t.Errorf("other fields changed: %v", got)
			}
		})
	}
}

// lens builds datagrams of the given lengths (4-byte header + payload).
func lens(ls ...int) []Datagram {
	ds := make([]Datagram, len(ls))
	for i, l := range ls {
		h := min(l, 4)
		ds[i] = Datagram{Hdr: make([]byte, h), Payload: make([]byte, l-h)}
	}
	return ds
}

func repeat(n, l int) []int { return slices.Repeat([]int{l}, n) }

func TestPlanMessages(t *testing.T) {
	const b = 1472 // 4 + 1468: the largest block fitting an Ethernet MTU
	tests := []struct {
		name string
		ls   []int
		gso  bool
		segs int
		bug  bool
		want []span
	}{
		{"no gso", []int{b, b, 10}, false, 64, false, []span{{0, 1, 0}, {1, 2, 0}, {2, 3, 0}}},
		{"window 64, short tail: 44+20", append(repeat(63, b), 100), true, 64, false,
			[]span{{0, 44, b}, {44, 64, b}}},
		{"equal window 64: 44+20", repeat(64, b), true, 64, false,
			[]span{{0, 44, b}, {44, 64, b}}},
		{"one datagram needs no cmsg", []int{b}, true, 64, false, []span{{0, 1, 0}}},
		{"shorter one ends a run", []int{b, b, 100, b, b}, true, 64, false,
			[]span{{0, 3, b}, {3, 5, b}}},
		{"longer one starts a run", []int{100, 100, b, b}, true, 64, false,
			[]span{{0, 2, 100}, {2, 4, b}}},
		{"run of one then run", []int{100, b, b}, true, 64, false,
			[]span{{0, 1, 0}, {1, 3, b}}},
		{"max segments", repeat(100, 104), true, 64, false,
			[]span{{0, 64, 104}, {64, 100, 104}}},
		{"smaller max segments", repeat(5, 104), true, 2, false,
			[]span{{0, 2, 104}, {2, 4, 104}, {4, 5, 0}}},
		{"65507 bytes exactly", []int{32753, 32754}, true, 64, false, []span{{0, 1, 0}, {1, 2, 0}}},
		{"65507 bytes fits", []int{32754, 32753}, true, 64, false, []span{{0, 2, 32754}}},
		{"empty datagram never coalesced", []int{0, 0, 4, 0}, true, 64, false,
			[]span{{0, 1, 0}, {1, 2, 0}, {2, 3, 0}, {3, 4, 0}}},
		{"bug: 10 equal are singles", repeat(10, b), true, 64, true,
			[]span{{0, 1, 0}, {1, 2, 0}, {2, 3, 0}, {3, 4, 0}, {4, 5, 0}, {5, 6, 0}, {6, 7, 0}, {7, 8, 0}, {8, 9, 0}, {9, 10, 0}}},
		{"bug: short tail keeps gso", []int{b, b, b, 9}, true, 64, true, []span{{0, 4, b}}},
		{"bug: 63 equal + short: 19 singles + 44 + tail", append(repeat(63, b), 9), true, 64, true,
			append(singles(0, 19), span{19, 64, b})},
		{"bug: 63 equal + 1400: 20 singles + 43 + tail", append(repeat(63, b), 1400), true, 64, true,
			append(singles(0, 20), span{20, 64, b})},
		{"bug: 2 equal then longer", []int{100, 100, b}, true, 64, true,
			[]span{{0, 1, 0}, {1, 2, 0}, {2, 3, 0}}},
		{"bug: equal runs then short tail run", []int{100, 100, 50, b, b}, true, 64, true,
			[]span{{0, 3, 100}, {3, 4, 0}, {4, 5, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planMessages(lens(tt.ls...), tt.gso, tt.segs, tt.bug, nil)
			if !slices.Equal(got, tt.want) {
				t.Errorf("plan:\n got %v\nwant %v", got, tt.want)
			}
			checkPlan(t, tt.ls, got, tt.segs, tt.bug)
		})
	}
}

func singles(from, to int) []span {
	var s []span
	for i := from; i < to; i++ {
		s = append(s, span{i, i + 1, 0})
	}
	return s
}

// checkPlan asserts the invariants every plan must keep: it covers the
// datagrams in order, and each GSO message is legal for the kernel.
func checkPlan(t *testing.T, ls []int, plan []span, maxSegs int, bug bool) {
	t.Helper()
	next := 0
	for _, s := range plan {
		if s.start != next || s.end <= s.start {
			t.Fatalf("span %v does not continue at %d", s, next)
		}
		next = s.end
		if s.seg == 0 {
			if s.end-s.start != 1 {
				t.Errorf("span %v: several datagrams without GSO", s)
			}
			continue
		}
		n := s.end - s.start
		total := 0
		for i := s.start; i < s.end; i++ {
			total += ls[i]
			if i < s.end-1 && ls[i] != s.seg || i == s.end-1 && ls[i] > s.seg {
				t.Errorf("span %v: datagram %d has length %d", s, i, ls[i])
			}
		}
		if n < 2 || n > maxSegs || total > maxGSOPayload {
			t.Errorf("span %v: %d segments, %d bytes", s, n, total)
		}
		if bug && ls[s.end-1] == s.seg {
			t.Errorf("span %v: equal-length tail with the bug", s)
		}
	}
	if next != len(ls) {
		t.Fatalf("plan covers %d of %d datagrams", next, len(ls))
	}
}

// FuzzPlanMessages checks the plan invariants on arbitrary length patterns.
func FuzzPlanMessages(f *testing.F) {
	f.Add([]byte{10, 10, 10, 5}, uint8(64), true)
	f.Add([]byte{255, 255, 1, 255}, uint8(3), false)
	f.Fuzz(func(t *testing.T, pattern []byte, segs uint8, bug bool) {
		if len(pattern) > maxBatch {
			pattern = pattern[:maxBatch]
		}
		ls := make([]int, len(pattern))
		for i, p := range pattern {
			ls[i] = int(p) * 300 // up to 76500: some cannot be coalesced at all
		}
		maxSegs := int(segs%gsoMaxSegments) + 1
		checkPlan(t, ls, planMessages(lens(ls...), true, maxSegs, bug, nil), maxSegs, bug)
	})
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int]string{
		8 << 20: "8 MiB", 425984: "416 KiB", 100: "100 B", 1536 << 10: "1.5 MiB", 1500: "1.5 KiB",
	} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}
