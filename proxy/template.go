package proxy

import (
	"errors"
	"fmt"
	"strings"
)

// template is a string with {name} placeholders: path parameters, and in
// channel templates also {user}, {tenant} and {claims.NAME}.
type template struct {
	parts []part
}

type part struct {
	lit  string
	name string // non-empty: a placeholder
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func reservedName(n string) bool { return n == "user" || n == "tenant" || n == "claims" }

// parseTemplate parses s. params are the route's path parameters; channel
// templates may also use the identity placeholders.
func parseTemplate(s string, params []string, channel bool) (template, error) {
	var t template
	if s == "" {
		return t, errors.New("is empty")
	}
	for rest := s; rest != ""; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, part{lit: rest})
			break
		}
		if rest[i] == '}' {
			return t, fmt.Errorf("unbalanced } in %q", s)
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unclosed { in %q", s)
		}
		name := rest[i+1 : i+j]
		switch {
		case contains(params, name):
		case channel && (name == "user" || name == "tenant"):
		case channel && strings.HasPrefix(name, "claims.") && validName(name[len("claims."):]):
		default:
			return t, fmt.Errorf("unknown placeholder {%s}", name)
		}
		t.parts = append(t.parts, part{name: name})
		rest = rest[i+j+1:]
	}
	if channel {
		// Substituted values never contain ':', so with every placeholder
		// between ':'s no two value combinations can spell the same name.
		for k, p := range t.parts {
			if p.name == "" {
				continue
			}
			before := k == 0 || strings.HasSuffix(t.parts[k-1].lit, ":")
			after := k == len(t.parts)-1 || strings.HasPrefix(t.parts[k+1].lit, ":")
			if !before || !after {
				return t, fmt.Errorf("placeholder {%s} in %q must sit between ':' separators (or the ends of the name)", p.name, s)
			}
		}
	}
	return t, nil
}

func mustTemplate(s string, params []string, channel bool) template {
	t, err := parseTemplate(s, params, channel)
	if err != nil {
		panic(err) // Validate ran first
	}
	return t
}

func (t template) expand(value func(name string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.lit)
		} else {
			b.WriteString(value(p.name))
		}
	}
	return b.String()
}

// expandChannel fills a channel template. Every substituted value must be a
// safe channel fragment: otherwise a path parameter like "b:c" could turn
// collab:{tenant}:{doc} of tenant "a" into tenant "a:b"'s channel.
func (t template) expandChannel(value func(name string) (string, bool)) (string, error) {
	var err error
	s := t.expand(func(name string) string {
		v, ok := value(name)
		if err == nil && (!ok || !channelSafe(v)) {
			err = &placeholderError{name: name}
		}
		return v
	})
	return s, err
}

// placeholderError names the placeholder whose value cannot go into a
// channel name.
type placeholderError struct{ name string }

func (e *placeholderError) Error() string {
	return fmt.Sprintf("value for {%s} is missing or not allowed in a channel name", e.name)
}

// channelError classifies a failed channel expansion: a path parameter is
// the client's bad request (400); a claim is what the token lacks (403).
func channelError(err error) error {
	var pe *placeholderError
	if errors.As(err, &pe) && (pe.name == "user" || pe.name == "tenant" || strings.HasPrefix(pe.name, "claims.")) {
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return fmt.Errorf("%w: %v", ErrBadParam, err)
}

// channelSafe accepts 1-256 bytes of printable ASCII other than the
// separators and glob characters used in channel names.
func channelSafe(v string) bool {
	if v == "" || len(v) > 256 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(":*?[]{}\\/", c) >= 0 {
			return false
		}
	}
	return true
}
