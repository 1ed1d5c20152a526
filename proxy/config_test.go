package proxy

import "testing"

func TestChannelTemplatesNeedSeparators(t *testing.T) {
	params := []string{"doc", "id"}
	for tmpl, ok := range map[string]bool{
		"collab:{tenant}:{doc}":  true,
		"{tenant}:{doc}":         true,
		"ai:stream:{id}":         true,
		"plain":                  true,
		"collab-{tenant}-{doc}":  false, // tenant "a" + doc "b-x" == tenant "a-b" + doc "x"
		"collab:{tenant}{doc}":   false,
		"collab:{tenant}x:{doc}": false,
	} {
		_, err := parseTemplate(tmpl, params, true)
		if (err == nil) != ok {
			t.Errorf("%s: err = %v, want ok=%v", tmpl, err, ok)
		}
	}
	// Upstream URL templates are not channel names: no such rule.
	if _, err := parseTemplate("ws://x/dash-{id}", params, false); err != nil {
		t.Errorf("upstream template: %v", err)
	}
}
