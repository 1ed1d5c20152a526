package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/coder/websocket"
)

// runUpstream is `bench upstream`: the echo server every target proxies
// to, in its own process so that its memory and CPU are its own.
func runUpstream(args []string) int {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", serveEcho)
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		json.NewEncoder(w).Encode(map[string]any{
			"goroutines": runtime.NumGoroutine(), "heap_inuse": ms.HeapInuse, "stack_inuse": ms.StackInuse,
		})
	})
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

var echoBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// serveEcho echoes every message with its type. It streams each message
// through a pooled buffer, so an idle connection holds no buffer and a
// 1 MiB message is never held whole.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(64 << 20)
	ctx := context.Background()
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			return
		}
		bp := echoBufs.Get().(*[]byte)
		err = echoOne(ctx, c, typ, rd, *bp)
		echoBufs.Put(bp)
		if err != nil {
			return
		}
	}
}

func echoOne(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, rd io.Reader, buf []byte) error {
	n, err := io.ReadFull(rd, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return c.Write(ctx, typ, buf[:n])
	}
	if err != nil {
		return err
	}
	wr, err := c.Writer(ctx, typ)
	if err != nil {
		return err
	}
	if _, err := wr.Write(buf); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(wr, rd, buf); err != nil {
		return err
	}
	return wr.Close()
}

// runRelay is `bench relay`: a raw TCP relay, the floor for any
// user-space hop. Each direction reads into a pooled 32 KiB buffer taken
// only once the socket is readable and copies it out, so an idle pair costs
// two goroutines and two sockets. (io.Copy between TCP conns would splice,
// holding two pipes, four more fds, per idle pair.)
func runRelay(args []string) int {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	target := fs.String("target", "", "address to relay to")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return 0
		}
		go relayConn(c.(*net.TCPConn), *target)
	}
}

func relayConn(c *net.TCPConn, target string) {
	conn, err := net.Dial("tcp", target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay: dial upstream:", err)
		c.Close()
		return
	}
	u := conn.(*net.TCPConn)
	done := make(chan struct{})
	go func() {
		relayCopy(u, c)
		u.CloseWrite()
		close(done)
	}()
	relayCopy(c, u)
	c.CloseWrite()
	<-done
	c.Close()
	u.Close()
}

var relayBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// relayCopy copies src to dst until EOF or an error.
func relayCopy(dst, src *net.TCPConn) {
	rc, err := src.SyscallConn()
	if err != nil {
		return
	}
	for {
		var bp *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			bp = relayBufs.Get().(*[]byte)
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr == syscall.EAGAIN || rerr == syscall.EINTR {
				relayBufs.Put(bp)
				bp = nil
				return false // wait until readable, holding no buffer
			}
			return true
		})
		if err != nil || rerr != nil || n <= 0 {
			if bp != nil {
				relayBufs.Put(bp)
			}
			return
		}
		_, werr := dst.Write((*bp)[:n])
		relayBufs.Put(bp)
		if werr != nil {
			return
		}
	}
}
