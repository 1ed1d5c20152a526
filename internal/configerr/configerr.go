// Package configerr is how wsgate's packages report configuration problems:
// each names the config file key at fault, and Validate reports them all.
package configerr

import (
	"errors"
	"fmt"
)

// FieldError names the config key at fault, as the config file spells it.
type FieldError struct {
	Key string
	Err error
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// List collects problems. The zero value is ready to use.
type List struct {
	errs []error
}

// Add records a problem with key.
func (l *List) Add(key, format string, args ...any) {
	l.errs = append(l.errs, &FieldError{Key: key, Err: fmt.Errorf(format, args...)})
}

// Err joins what was recorded, or returns nil.
func (l *List) Err() error { return errors.Join(l.errs...) }
