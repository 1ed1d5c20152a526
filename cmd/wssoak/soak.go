package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// options configure one soak run. The defaults are `make soak`'s.
type options struct {
	Duration       time.Duration
	Conns          int
	Ramp           time.Duration
	Interval       time.Duration
	Churn          float64
	TTLMin, TTLMax time.Duration
	Settle         time.Duration
	GoroutineSlack int
	HeapSlackMiB   float64
	RSSSlackMiB    float64
	RSSPeakShare   float64
	Wsgate         string
	Race           bool
	Verbose        bool
}

func defaultOptions() options {
	return options{
		Duration:       2 * time.Minute,
		Conns:          2000,
		Interval:       time.Second,
		Churn:          0.02,
		TTLMin:         20 * time.Second,
		TTLMax:         60 * time.Second,
		Settle:         150 * time.Second,
		GoroutineSlack: 10,
		// The token cache alone may keep ~7 MiB (10,000 identities).
		HeapSlackMiB: 16,
		RSSSlackMiB:  20,
		// The Go runtime keeps part of a peak it has returned to the heap
		// (span fragmentation, goroutine descriptors, pages not yet
		// scavenged): about a quarter of it at 2,000 connections.
		RSSPeakShare: 0.35,
	}
}

func (o *options) validate() error {
	switch {
	case o.Duration <= 0 || o.Conns <= 0 || o.Interval <= 0:
		return errors.New("-duration, -conns and -interval must be positive")
	case o.Interval > 4*time.Second:
		return errors.New("-interval must be at most 4s (wsgate waits 5s for a close reply)")
	case o.Churn < 0 || o.Churn > 1:
		return errors.New("-churn must be between 0 and 1")
	case o.TTLMin < 2*time.Second || o.TTLMax < o.TTLMin:
		return errors.New("need 2s <= -ttl-min <= -ttl-max")
	}
	if o.Ramp <= 0 {
		o.Ramp = min(o.Duration/6, 10*time.Second)
	}
	return nil
}

// Bounds on when a token-expiry close may arrive, relative to the token's
// exp (auth.leeway is 0 in the soak config; exp has one-second resolution).
const (
	expiryEarly = time.Second
	expiryLate  = 3 * time.Second
)

// soaker runs one soak. Its counters are updated by every client.
type soaker struct {
	o      options
	gw     *wsgateProcess
	up     *echoUpstream
	rep    *report
	churnC []chan struct{} // one per client; a send asks it to reconnect
	// dialer carries the clients' handshakes; its idle connections (after
	// a refused handshake) are closed when the soak ends.
	dialer *http.Client
}

// soak runs the whole sequence and returns the report. An error means the
// soak could not run at all (build, start); failures of wsgate under load
// are in the report.
func soak(ctx context.Context, o options, progress io.Writer) (*report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := raiseFileLimit(2*o.Conns + 512); err != nil {
		return nil, err
	}
	up, err := startEchoUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	gw, err := startWsgate(ctx, o, up.addr())
	if err != nil {
		return nil, err
	}
	defer gw.kill()

	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	s := &soaker{o: o, gw: gw, up: up, rep: newReport(o), churnC: make([]chan struct{}, o.Conns), dialer: &http.Client{Transport: tr}}
	for i := range s.churnC {
		s.churnC[i] = make(chan struct{}, 1)
	}

	// Baseline: wsgate ready and idle.
	time.Sleep(time.Second)
	if s.rep.Base, err = gw.sample(ctx); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	s.rep.Peak = s.rep.Base
	if s.rep.Base.GCs == 0 {
		// The baseline live heap is only known after a first GC.
		for i := 0; i < 30 && s.rep.Base.GCs == 0 && err == nil; i++ {
			gw.idleWork(ctx, time.Second)
			s.rep.Base, err = gw.sample(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		s.rep.Peak = s.rep.Base
	}
	if o.Verbose {
		fmt.Fprintf(progress, "wssoak: wsgate %s ready; baseline %s\n", gw.bin, s.rep.Base)
	}

	loadCtx, stopLoad := context.WithTimeout(ctx, o.Duration)
	var clients sync.WaitGroup
	for id := 0; id < o.Conns; id++ {
		clients.Add(1)
		go s.client(loadCtx, &clients, id)
	}
	var aux sync.WaitGroup
	aux.Add(2)
	go s.churnLoop(loadCtx, &aux)
	go s.sampleLoop(loadCtx, &aux, progress)
	<-loadCtx.Done()
	stopLoad()
	aux.Wait()
	clients.Wait() // each closed its socket with 1000
	s.rep.LoadEnded = time.Now()
	if ctx.Err() != nil {
		s.rep.fail("interrupted")
	}

	s.settle(ctx, progress)
	s.rep.WsgateLog, s.rep.WsgateExit = gw.stop()
	up.close()
	if n := up.open(); n != 0 {
		s.rep.fail("%d upstream connections still open after wsgate stopped", n)
	}
	s.rep.finish()
	return s.rep, nil
}

// churnLoop asks a random Churn fraction of the clients to reconnect each second.
func (s *soaker) churnLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	n := int(s.o.Churn*float64(s.o.Conns) + 0.5)
	if n == 0 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := 0; i < n; i++ {
			select {
			case s.churnC[rand.IntN(len(s.churnC))] <- struct{}{}:
			default:
			}
		}
	}
}

// sampleLoop records wsgate's peak goroutines and RSS during the load.
func (s *soaker) sampleLoop(ctx context.Context, wg *sync.WaitGroup, progress io.Writer) {
	defer wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	start := time.Now()
	lastPrint := start
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sm, err := s.gw.sample(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.rep.fail("sample wsgate during load: %v", err)
			}
			continue
		}
		s.rep.peak(sm)
		if s.o.Verbose && time.Since(lastPrint) >= 10*time.Second {
			lastPrint = time.Now()
			fmt.Fprintf(progress, "wssoak: %4.0fs %s | %s\n", time.Since(start).Seconds(), sm, s.rep.counters())
		}
	}
}

// settle checks that wsgate returns to its baseline once every client has
// closed: no connection left, goroutines within GoroutineSlack, and after
// two GC cycles the live heap within HeapSlackMiB and the RSS within
// rssLimit. It waits up to Settle for each.
func (s *soaker) settle(ctx context.Context, progress io.Writer) {
	base := s.rep.Base
	maxG := base.Goroutines + s.o.GoroutineSlack
	maxHeap := base.LiveHeap + int64(s.o.HeapSlackMiB*(1<<20))
	maxRSS := s.rep.rssLimit()
	deadline := time.Now().Add(s.o.Settle)
	var last sample
	var err error
	gcs := int64(-1) // GC count once goroutines are back; -1 until then
	for {
		last, err = s.gw.sample(ctx)
		if err == nil && gcs < 0 && last.Active == 0 && last.Goroutines <= maxG {
			gcs = last.GCs
		}
		if err == nil && gcs >= 0 && last.GCs >= gcs+2 && last.Active == 0 && last.Goroutines <= maxG &&
			last.LiveHeap <= maxHeap && (last.RSS <= maxRSS || s.o.Race) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if s.o.Verbose && err == nil && time.Since(s.rep.LoadEnded)%(10*time.Second) < time.Second {
			fmt.Fprintf(progress, "wssoak: settling %s: %s\n", time.Since(s.rep.LoadEnded).Round(time.Second), last)
		}
		s.gw.idleWork(ctx, time.Second)
	}
	s.rep.Final, s.rep.Settled = last, time.Since(s.rep.LoadEnded)
	after := s.rep.Settled.Round(time.Second)
	if err != nil {
		s.rep.fail("sample wsgate after the load: %v", err)
		return
	}
	if last.Active != 0 {
		s.rep.fail("wsgate_connections_active is %d %s after every client closed", last.Active, after)
	}
	if last.Goroutines > maxG {
		s.rep.fail("goroutine leak: %d goroutines %s after the load, baseline %d (limit %d)", last.Goroutines, after, base.Goroutines, maxG)
	}
	if gcs < 0 || last.GCs < gcs+2 {
		s.rep.fail("wsgate ran fewer than 2 GC cycles in the %s after the load: heap and RSS not judged", after)
		return
	}
	if last.LiveHeap > maxHeap {
		s.rep.fail("heap leak: %s live %s after the load, baseline %s (limit %s)", mib(last.LiveHeap), after, mib(base.LiveHeap), mib(maxHeap))
	}
	if last.RSS > maxRSS && !s.o.Race { // the race detector's shadow memory is never returned
		s.rep.fail("RSS %s %s after the load, baseline %s, peak %s (limit %s)", mib(last.RSS), after, mib(base.RSS), mib(s.rep.Peak.RSS), mib(maxRSS))
	}
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit; wsgate,
// started later, inherits it. Each connection costs this process two
// descriptors (client and upstream end) and wsgate two.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("setrlimit: %w", err)
		}
	}
	if lim.Cur < uint64(need) {
		return fmt.Errorf("open-file limit %d is below the %d this run needs: raise `ulimit -Hn` or lower -conns", lim.Cur, need)
	}
	return nil
}
