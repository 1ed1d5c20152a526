package proxy

import (
	"net/http"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted := parseCIDRs(DefaultTrustedProxies)
	for name, tc := range map[string]struct {
		peer string
		xff  []string
		want string
	}{
		"untrusted peer, header ignored":           {peer: "203.0.113.9:4000", xff: []string{"198.51.100.1"}, want: "203.0.113.9"},
		"trusted peer, no header":                  {peer: "10.0.0.2:4000", want: "10.0.0.2"},
		"trusted peer, public client":              {peer: "10.0.0.2:4000", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		"rightmost untrusted hop wins":             {peer: "10.0.0.2:4000", xff: []string{"198.51.100.1, 203.0.113.5, 10.0.0.9"}, want: "203.0.113.5"},
		"hops across several header lines":         {peer: "10.0.0.2:4000", xff: []string{"198.51.100.1", "10.0.0.9"}, want: "198.51.100.1"},
		"intranet client behind the gateway":       {peer: "10.0.0.2:4000", xff: []string{"192.168.4.20"}, want: "192.168.4.20"},
		"every hop trusted, leftmost is client":    {peer: "127.0.0.1:4000", xff: []string{"127.0.0.2, 10.0.0.9"}, want: "127.0.0.2"},
		"stops at an unparseable hop":              {peer: "10.0.0.2:4000", xff: []string{"bogus, 192.168.4.20, 10.0.0.9"}, want: "192.168.4.20"},
		"unparseable rightmost hop, peer":          {peer: "10.0.0.2:4000", xff: []string{"192.168.4.20, bogus"}, want: "10.0.0.2"},
		"spaces and IPv6":                          {peer: "[::1]:4000", xff: []string{" fd00::5 , ::1 "}, want: "fd00::5"},
		"IPv4-mapped peer is still trusted":        {peer: "[::ffff:127.0.0.1]:4000", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		"peer without a port":                      {peer: "10.0.0.2", xff: []string{"192.168.4.20"}, want: "192.168.4.20"},
		"empty header value":                       {peer: "10.0.0.2:4000", xff: []string{""}, want: "10.0.0.2"},
		"distinct intranet clients, distinct keys": {peer: "10.0.0.2:4000", xff: []string{"192.168.4.21"}, want: "192.168.4.21"},
	} {
		t.Run(name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, trusted); got != tc.want {
				t.Errorf("clientAddr(peer %s, X-Forwarded-For %q) = %q, want %q", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
}
