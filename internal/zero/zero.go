// Package zero fills zero-valued config fields with their documented
// defaults: the one rule every Config's withDefaults follows.
package zero

// Default sets *v to d when *v is the zero value.
func Default[T comparable](v *T, d T) {
	var z T
	if *v == z {
		*v = d
	}
}
