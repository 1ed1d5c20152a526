package closecode_test

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/internal/closecode"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestForwardable(t *testing.T) {
	const fb = closecode.GoingAway
	cases := map[string]struct {
		code, want websocket.StatusCode
	}{
		"1000 normal passes":               {1000, 1000},
		"1001 going away passes":           {1001, 1001},
		"1002 protocol error passes":       {1002, 1002},
		"1003 unsupported data passes":     {1003, 1003},
		"1004 reserved: fallback":          {1004, fb},
		"1005 no status: normal":           {1005, closecode.Normal},
		"1006 abnormal: fallback":          {1006, fb},
		"1007 invalid payload passes":      {1007, 1007},
		"1008 policy passes":               {1008, 1008},
		"1009 too big passes":              {1009, 1009},
		"1010 mandatory extension passes":  {1010, 1010},
		"1011 internal error passes":       {1011, 1011},
		"1012 service restart passes":      {1012, 1012},
		"1013 try again later passes":      {1013, 1013},
		"1014 bad gateway passes":          {1014, 1014},
		"1015 TLS handshake: fallback":     {1015, fb},
		"1016 unassigned: fallback":        {1016, fb},
		"2999 unassigned: fallback":        {2999, fb},
		"3000 registered passes":           {3000, 3000},
		"4001 private passes":              {4001, 4001},
		"4999 private passes":              {4999, 4999},
		"5000 out of range: fallback":      {5000, fb},
		"999 below range: fallback":        {999, fb},
		"0: fallback":                      {0, fb},
		"-1 (CloseStatus of no close): fb": {-1, fb},
		"65535: fallback":                  {65535, fb},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := closecode.Forwardable(tc.code, fb); got != tc.want {
				t.Errorf("Forwardable(%d, %d) = %d, want %d", tc.code, fb, got, tc.want)
			}
		})
	}
	// The fallback is the caller's: the upstream leg's failure maps to 1014.
	if got := closecode.Forwardable(websocket.StatusAbnormalClosure, closecode.BadGateway); got != closecode.BadGateway {
		t.Errorf("Forwardable(1006, 1014) = %d, want 1014", got)
	}
}

func TestTableIsOrderedAndSendable(t *testing.T) {
	seen := map[websocket.StatusCode]bool{}
	for i, e := range closecode.Table {
		if seen[e.Code] {
			t.Errorf("code %d listed twice", e.Code)
		}
		seen[e.Code] = true
		if i > 0 && closecode.Table[i-1].Code >= e.Code {
			t.Errorf("Table not in code order at %d (%d after %d)", i, e.Code, closecode.Table[i-1].Code)
		}
		if closecode.Forwardable(e.Code, 0) != e.Code {
			t.Errorf("code %d is not one that may go on the wire", e.Code)
		}
		if len(e.Reason) > 123 {
			t.Errorf("code %d: reason %q exceeds the 123 bytes a close frame allows", e.Code, e.Reason)
		}
		if e.When == "" || e.Client == "" {
			t.Errorf("code %d: When and Client must be documented", e.Code)
		}
		if got, ok := closecode.Lookup(e.Code); !ok || got != e {
			t.Errorf("Lookup(%d) = %+v, %v", e.Code, got, ok)
		}
	}
	if _, ok := closecode.Lookup(1005); ok {
		t.Error("Lookup(1005) found an entry: 1005 never goes on the wire")
	}
}

// The README's close-code table is the user-facing copy of Table: every code
// wsgate sends must have a row ("| 4001 | ...").
func TestREADMEListsEveryCloseCode(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if os.IsNotExist(err) {
		t.Skip("README.md does not exist yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range closecode.Table {
		row := regexp.MustCompile(fmt.Sprintf(`(?m)^\|\s*`+"`?"+`%d`+"`?"+`\s*\|`, e.Code))
		if !row.Match(readme) {
			t.Errorf("README.md has no close-code row for %d (%s)", e.Code, e.When)
		}
	}
}

// The table and the events are one: every event's client code has a row,
// and every row is a code some event sends (1000 is the peers' own, passed
// through), so the table lists nothing wsgate never sends.
func TestEventsAndTableAgree(t *testing.T) {
	raised := map[websocket.StatusCode]bool{closecode.Normal: true}
	for _, ev := range closecode.Events {
		raised[ev.Client] = true
		if _, ok := closecode.Lookup(ev.Client); !ok {
			t.Errorf("event %q sends the client %d, which the table does not list", ev.Reason, ev.Client)
		}
		if closecode.Forwardable(ev.Upstream, 0) != ev.Upstream {
			t.Errorf("event %q sends the upstream %d, which may not go on the wire", ev.Reason, ev.Upstream)
		}
		if ev.Reason == "" || len(ev.Reason) > 123 {
			t.Errorf("event %+v: reason must be set and fit a close frame", ev)
		}
		switch ev.By {
		case closecode.ByClient, closecode.ByUpstream, closecode.ByWsgate:
		default:
			t.Errorf("event %q: By %q is not a side", ev.Reason, ev.By)
		}
		if ev.Brief != "" && ev.Brief != closecode.ByClient && ev.Brief != closecode.ByUpstream {
			t.Errorf("event %q: Brief %q is not a leg", ev.Reason, ev.Brief)
		}
	}
	for _, e := range closecode.Table {
		if !raised[e.Code] {
			t.Errorf("the table lists %d, which no event sends", e.Code)
		}
	}
	if got := closecode.UpstreamClosed(websocket.StatusAbnormalClosure, ""); got.Client != closecode.BadGateway || got.By != closecode.ByUpstream {
		t.Errorf("UpstreamClosed(1006) = %+v, want 1014 to the client", got)
	}
	if got := closecode.ClientClosed(4002, "tab closed"); got.Upstream != 4002 || got.Reason != "tab closed" {
		t.Errorf("ClientClosed(4002) = %+v, want 4002 passed on", got)
	}
}

// Every close-code row in the README is a code in the table: it lists only
// codes wsgate sends or passes through.
func TestREADMEListsOnlyTableCodes(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if os.IsNotExist(err) {
		t.Skip("README.md does not exist yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	start := regexp.MustCompile(`(?m)^## Close codes\n`).FindIndex(readme)
	if start == nil {
		t.Fatal("README.md has no \"## Close codes\" section")
	}
	section := readme[start[1]:]
	if end := regexp.MustCompile(`(?m)^## `).FindIndex(section); end != nil {
		section = section[:end[0]]
	}
	rows := regexp.MustCompile("(?m)^\\|\\s*`?(\\d{4})`?\\s*\\|").FindAllSubmatch(section, -1)
	if len(rows) == 0 {
		t.Fatal("no close-code rows found")
	}
	for _, m := range rows {
		var code int
		fmt.Sscan(string(m[1]), &code)
		if _, ok := closecode.Lookup(websocket.StatusCode(code)); !ok {
			t.Errorf("README.md lists close code %d, which wsgate neither sends nor has in its table", code)
		}
	}
}

// Every reason an event sends appears in the README row of the code its
// client gets, so a reader can look up any close wsgate sends.
func TestREADMERowsNameEveryEventReason(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skip("README.md does not exist yet")
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(readme), "\n") {
		if f := strings.SplitN(line, "|", 3); len(f) == 3 && strings.TrimSpace(f[0]) == "" {
			if code := strings.TrimSpace(f[1]); len(code) == 4 && rows[code] == "" {
				rows[code] = line
			}
		}
	}
	for _, ev := range closecode.Events {
		row := rows[strconv.Itoa(int(ev.Client))]
		if !strings.Contains(row, ev.Reason) {
			t.Errorf("README's %d row does not name the reason %q", ev.Client, ev.Reason)
		}
	}
}
