//go:build !linux

package proxy

import "errors"

// poller is unavailable off Linux: every wire leg keeps a goroutine.
type poller struct{}

var errNoPoller = errors.New("no event loop on this platform")

func (l *polledLeg) arm() error { return errNoPoller }
func (l *polledLeg) disarm()    {}
func (l *polledLeg) remove()    {}

func (l *polledLeg) waitWritable(*wire, bool) error { return errNoPoller }
func (l *polledLeg) unwaitWritable(*wire)           {}
