package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// report is what a soak measured. Counters are updated by every client;
// the rest is written by soak alone.
type report struct {
	o options

	Dials, DialErrors, Reconnects, Churned atomic.Int64
	Sent, Echoed, Mismatches               atomic.Int64
	Expiries, EarlyExpiries, LateExpiries  atomic.Int64
	Base, Peak, Final                      sample
	LoadEnded                              time.Time
	Settled                                time.Duration
	WsgateExit                             error
	WsgateLog                              logStats
	Failures                               []string // the first maxFailures; see failureCount

	mu           sync.Mutex
	unexpectedBy map[int]int // close code (-1: none) → count; guarded by mu
	failureCount int         // guarded by mu
}

const maxFailures = 20

func newReport(o options) *report { return &report{o: o, unexpectedBy: map[int]int{}} }

func (r *report) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failureCount++
	if len(r.Failures) < maxFailures {
		r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
	}
}

func (r *report) unexpected(code int) {
	r.mu.Lock()
	r.unexpectedBy[code]++
	r.mu.Unlock()
}

// Unexpected returns the count of connections that ended other than by
// churn, the end of the soak, or their token's expiry.
func (r *report) Unexpected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.unexpectedBy {
		n += c
	}
	return n
}

// rssLimit is the RSS allowed after the load: the baseline plus the larger
// of RSSSlackMiB and RSSPeakShare of the rise to the peak.
func (r *report) rssLimit() int64 {
	rise := float64(r.Peak.RSS - r.Base.RSS)
	return r.Base.RSS + int64(max(r.o.RSSSlackMiB*(1<<20), r.o.RSSPeakShare*rise))
}

func (r *report) peak(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Peak.Goroutines = max(r.Peak.Goroutines, s.Goroutines)
	r.Peak.RSS = max(r.Peak.RSS, s.RSS)
	r.Peak.Active = max(r.Peak.Active, s.Active)
	r.Peak.LiveHeap = max(r.Peak.LiveHeap, s.LiveHeap)
}

// finish adds the checks that need the whole run.
func (r *report) finish() {
	if r.Peak.Active < r.o.Conns*9/10 {
		r.fail("wsgate never held %d connections at once (peak %d)", r.o.Conns, r.Peak.Active)
	}
	if r.o.Duration > r.o.TTLMax+expiryLate && r.Expiries.Load() == 0 {
		r.fail("no token-expiry close (4001) in a run longer than -ttl-max")
	}
	if r.Echoed.Load() == 0 {
		r.fail("no message was echoed")
	}
	if r.WsgateExit != nil {
		r.fail("wsgate exit after SIGTERM: %v", r.WsgateExit)
	}
	if r.WsgateLog.Races > 0 {
		r.fail("wsgate reported %d data races", r.WsgateLog.Races)
	}
	if r.WsgateLog.Panics > 0 {
		r.fail("wsgate panicked")
	}
	if r.WsgateLog.Errors > 0 {
		r.fail("wsgate logged %d error lines, e.g. %s", r.WsgateLog.Errors, r.WsgateLog.FirstError)
	}
}

func (r *report) counters() string {
	return fmt.Sprintf("dials %d, sent %d, echoed %d, expiries %d, churned %d, failures %d",
		r.Dials.Load(), r.Sent.Load(), r.Echoed.Load(), r.Expiries.Load(), r.Churned.Load(), r.failures())
}

func (r *report) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failureCount
}

func (r *report) print(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "wssoak: %s, %d connections (ramp %s), a message each per %s, churn %.1f%%/s, token TTL %s-%s\n",
		o.Duration, o.Conns, o.Ramp, o.Interval, o.Churn*100, o.TTLMin, o.TTLMax)
	fmt.Fprintf(w, "  connections  dials %d (failed %d), reconnects %d (churn %d, expiry %d)\n",
		r.Dials.Load(), r.DialErrors.Load(), r.Reconnects.Load(), r.Churned.Load(), r.Expiries.Load())
	fmt.Fprintf(w, "  messages     sent %d, echoed %d, mismatched %d\n", r.Sent.Load(), r.Echoed.Load(), r.Mismatches.Load())
	fmt.Fprintf(w, "  closes       4001 expiry %d (early %d, late %d), unexpected %d%s\n",
		r.Expiries.Load(), r.EarlyExpiries.Load(), r.LateExpiries.Load(), r.Unexpected(), r.unexpectedCodes())
	fmt.Fprintf(w, "  goroutines   baseline %d, peak %d, final %d (limit %d)\n",
		r.Base.Goroutines, r.Peak.Goroutines, r.Final.Goroutines, r.Base.Goroutines+o.GoroutineSlack)
	fmt.Fprintf(w, "  live heap    baseline %s, peak %s, final %s (limit %s)\n",
		mib(r.Base.LiveHeap), mib(r.Peak.LiveHeap), mib(r.Final.LiveHeap), mib(r.Base.LiveHeap+int64(o.HeapSlackMiB*(1<<20))))
	fmt.Fprintf(w, "  RSS          baseline %s, peak %s, final %s (limit %s), measured %s after the load\n",
		mib(r.Base.RSS), mib(r.Peak.RSS), mib(r.Final.RSS), mib(r.rssLimit()), r.Settled.Round(100*time.Millisecond))
	fmt.Fprintf(w, "  wsgate       %d log lines (%d warn, %d error), exit: %s\n",
		r.WsgateLog.Lines, r.WsgateLog.Warns, r.WsgateLog.Errors, exitText(r.WsgateExit))
	n := r.failures()
	if n == 0 {
		fmt.Fprintln(w, "PASS")
		return
	}
	fmt.Fprintf(w, "FAIL: %d failures", n)
	if n > len(r.Failures) {
		fmt.Fprintf(w, " (first %d)", len(r.Failures))
	}
	fmt.Fprintln(w, ":")
	for _, f := range r.Failures {
		fmt.Fprintln(w, "  -", f)
	}
}

func (r *report) unexpectedCodes() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.unexpectedBy) == 0 {
		return ""
	}
	var parts []string
	for code, n := range r.unexpectedBy {
		label := fmt.Sprint(code)
		if code == -1 {
			label = "no close frame"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", label, n))
	}
	sort.Strings(parts)
	return " (" + strings.Join(parts, ", ") + ")"
}

func exitText(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
