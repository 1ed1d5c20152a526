package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// pairsPerAddr is how many connections the bench puts on one
// (source address, destination) pair: below the 28,232 ephemeral ports of
// Linux's default range.
const pairsPerAddr = 20000

// bigIdle holds bigPairs idle pairs through one fresh wsgate process and
// reports its RSS. Loopback has ~28k ephemeral ports per source and
// destination address, so the clients dial from 127.0.0.2, 127.0.0.3, …
// and wsgate's pairs are spread over several upstream processes (one route
// each). The clients are raw sockets that did the upgrade by hand: they
// hold no buffer and no goroutine in the bench, so the bench's own memory
// does not limit the count. wsgate's heartbeat is 10 minutes here, since
// those clients do not answer pings; everything else is the production
// configuration.
func (r *runner) bigIdle() error {
	n := r.p.bigPairs
	x := r.res.Extra
	x["big_pairs_target"] = float64(n)
	k := (n + pairsPerAddr - 1) / pairsPerAddr
	var ups []*upstream
	defer func() {
		for _, u := range ups {
			u.stop()
		}
	}()
	for i := range k {
		u, err := r.e.startUpstream(fmt.Sprintf("big-upstream-%d", i))
		if err != nil {
			return err
		}
		ups = append(ups, u)
	}
	t, err := r.e.startWsgate("big-wsgate", wsgateOpts{more: ups, heartbeat: "10m"})
	if err != nil {
		return err
	}
	defer t.stop()
	time.Sleep(500 * time.Millisecond)
	base, g0 := rssBytes(t.pids()), t.metric("go_goroutines")
	addr := t.base[len("ws://"):]
	tok := r.e.tokens["HS256"]

	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				src := net.IPv4(127, 0, 0, byte(2+i/pairsPerAddr))
				c, err := rawUpgrade(src, addr, fmt.Sprintf("/ws/echo%d?token=%s", i%k, tok))
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("pair %d from %s: %w", i, src, err) })
					next.Store(int64(n))
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	opened := 0
	for _, c := range conns {
		if c != nil {
			opened++
		}
	}
	x["big_pairs_opened"] = float64(opened)
	x["big_open_seconds"] = time.Since(t0).Seconds()
	if firstErr != nil {
		return fmt.Errorf("big idle: %d of %d pairs open: %w", opened, n, firstErr)
	}
	time.Sleep(3 * time.Second) // let the handshakes' garbage be collected
	rss := rssBytes(t.pids())
	x["big_wsgate_rss_mib"] = float64(rss) / (1 << 20)
	x["big_wsgate_rss_kib_per_pair"] = float64(rss-base) / float64(n) / 1024
	x["big_wsgate_goroutines_per_pair"] = (t.metric("go_goroutines") - g0) / float64(n)
	x["big_pairs_active"] = t.metric("wsgate_connections_active")
	var upRSS int64
	for _, u := range ups {
		upRSS += rssBytes(u.pids())
	}
	x["big_upstreams_rss_mib"] = float64(upRSS) / (1 << 20)
	r.log("  big idle: %d pairs open in %.1fs, %.0f active; wsgate RSS %.0f MiB (+%.1f KiB/pair), %.2f goroutines/pair",
		opened, x["big_open_seconds"], x["big_pairs_active"], x["big_wsgate_rss_mib"], x["big_wsgate_rss_kib_per_pair"], x["big_wsgate_goroutines_per_pair"])
	return nil
}

// rawUpgrade dials addr from src and performs a WebSocket upgrade by hand,
// returning the socket once the answer is 101.
func rawUpgrade(src net.IP, addr, pathQuery string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", pathQuery, addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, fmt.Errorf("upgrade answered %d", resp.StatusCode)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
