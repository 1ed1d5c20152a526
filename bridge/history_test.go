package bridge

import "testing"

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, channel string
		want             bool
	}{
		{"ai:durable:*", "ai:durable:s1", true},
		{"ai:durable:*", "ai:durable:", false},
		{"ai:durable:*", "ai:durable:s1:x", false},
		{"ai:durable:*", "ai:durable", false},
		{"collab:*:*", "collab:t1:doc", true},
		{"collab:*:*", "collab:t1", false},
		{"ai:stream:*", "ai:durable:s1", false},
		{"plain", "plain", true},
		{"plain", "plainer", false},
	} {
		if got := globMatch(tc.pattern, tc.channel); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.channel, got, tc.want)
		}
	}
}
