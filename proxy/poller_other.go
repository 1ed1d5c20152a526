//go:build !linux

package proxy

import "errors"

// poller is unavailable off Linux: every wire leg keeps a goroutine.
type poller struct{}

var thePoller poller

var errNoPoller = errors.New("no event loop on this platform")

func (p *poller) add(*polledLeg) error      { return errNoPoller }
func (p *poller) rearm(*polledLeg) error    { return errNoPoller }
func (p *poller) remove(*polledLeg)         {}
func (p *poller) dispatch(*polledLeg)       {}
func (p *poller) dispatchLocked(*polledLeg) {}
