//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
)

// poller is one event loop (poll.go): an epoll instance and one goroutine
// waiting on it while any leg is registered. Legs are watched
// level-triggered while the loop owns them and taken out (EPOLL_CTL_DEL)
// while a goroutine runs their pump, so a busy leg costs no epoll_ctl per
// message. The loop is owned by its registered legs: it ends when the last
// one leaves, and the next registration starts it again.
type poller struct {
	once    sync.Once
	initErr error
	epfd    int
	// ep is epfd as Go's netpoller sees it: the loop waits for it to be
	// readable (an event is pending) parked like any goroutine, rather
	// than blocking a thread in epoll_wait, so a wake-up costs a
	// goroutine switch, not a thread's return from a blocking syscall.
	ep    syscall.RawConn
	epf   *os.File // keeps ep's file (and epfd) open for the process's life
	wakeR int      // read end of the pipe that wakes the loop
	wakeW int
	// wepfd holds the write waits: the legs a pump of this loop has begun
	// a write to that they did not take at once, watched for EPOLLOUT
	// (one-shot), keyed by the pump's own leg. It is nested in epfd, so one
	// wait covers both; a separate set because the leg written to may be
	// watched for reading in this loop's epfd already.
	wepfd int

	mu      sync.Mutex
	legs    map[int32]*polledLeg // guarded by mu: registered legs by fd
	running bool                 // guarded by mu: the loop's goroutine exists
}

// pollers are the event loops, one per CPU wsgate may use at start: a leg
// is watched by the loop its fd picks, so each loop's legs are read and
// relayed on that loop's goroutine while the others run theirs.
var pollers = make([]poller, max(1, min(runtime.GOMAXPROCS(0), 16)))

// pollerFor is the loop that watches fd.
func pollerFor(fd int32) *poller { return &pollers[int(fd)%len(pollers)] }

// errNoPoller: the poller could not be set up; legs keep their goroutine.
var errNoPoller = errors.New("no event loop")

// pollEvents: readable, or the peer hung up. Level-triggered: a leg the
// loop read part of is reported again on the next wait.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP

func (p *poller) init() error {
	p.once.Do(func() {
		p.legs = make(map[int32]*polledLeg)
		if p.epfd, p.initErr = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); p.initErr != nil {
			return
		}
		var fds [2]int
		if p.initErr = syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); p.initErr != nil {
			return
		}
		p.wakeR, p.wakeW = fds[0], fds[1]
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wakeR)}
		if p.initErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, p.wakeR, &ev); p.initErr != nil {
			return
		}
		if p.wepfd, p.initErr = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); p.initErr != nil {
			return
		}
		ev = syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wepfd)}
		if p.initErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, p.wepfd, &ev); p.initErr != nil {
			return
		}
		if p.initErr = syscall.SetNonblock(p.epfd, true); p.initErr != nil {
			return
		}
		p.epf = os.NewFile(uintptr(p.epfd), "epoll")
		p.ep, p.initErr = p.epf.SyscallConn()
	})
	return p.initErr
}

// arm hands l (its fd, while the connection is held open) to its loop:
// registered in the loop's table on the first arming, and watched. It
// fails once the connection is closed.
func (l *polledLeg) arm() error {
	var cerr error
	err := l.raw.Control(func(fd uintptr) {
		if l.loop == nil {
			l.fd = int32(fd)
			l.loop = pollerFor(l.fd)
		}
		p := l.loop
		if err := p.init(); err != nil {
			cerr = errNoPoller
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		ev := syscall.EpollEvent{Events: pollEvents, Fd: l.fd}
		if cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); cerr != nil {
			return
		}
		l.registered = true
		p.legs[l.fd] = l
		if !p.running {
			p.running = true
			go p.loop()
		}
	})
	if err != nil {
		return err
	}
	return cerr
}

// disarm stops watching l while a goroutine runs its pump; it stays in the
// loop's table. Called on the loop.
func (l *polledLeg) disarm() {
	l.raw.Control(func(fd uintptr) {
		syscall.EpollCtl(l.loop.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// waitWritable has l's loop run l.writable once dst can take more bytes
// (or has failed). again: the wait was made before and has fired; it is
// re-enabled.
func (l *polledLeg) waitWritable(dst *wire, again bool) error {
	var cerr error
	err := dst.raw.Control(func(fd uintptr) {
		op := syscall.EPOLL_CTL_ADD
		if again {
			op = syscall.EPOLL_CTL_MOD
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLONESHOT, Fd: l.fd}
		cerr = syscall.EpollCtl(l.loop.wepfd, op, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return cerr
}

// unwaitWritable drops l's write wait on dst (a closed dst has none left).
func (l *polledLeg) unwaitWritable(dst *wire) {
	dst.raw.Control(func(fd uintptr) {
		syscall.EpollCtl(l.loop.wepfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// remove unregisters l for good. The kernel forgets a closed fd by itself;
// the table entry goes here.
func (l *polledLeg) remove() {
	p := l.loop
	l.raw.Control(func(fd uintptr) {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	p.mu.Lock()
	if p.legs[l.fd] == l {
		delete(p.legs, l.fd)
		if len(p.legs) == 0 {
			syscall.Write(p.wakeW, []byte{1}) // the loop ends
		}
	}
	p.mu.Unlock()
}

// loop waits for events and runs each ready leg (polledLeg.ready) and
// each write wait that fired (polledLeg.writable), which never block. When
// the last leg has left, it ends.
func (p *poller) loop() {
	var events, wevents [128]syscall.EpollEvent
	var ready, writable [128]*polledLeg
	var drain [64]byte
	var n int
	var werr error
	wait := func(uintptr) bool { // epoll_wait without waiting; false: wait for epfd
		for {
			n, werr = syscall.EpollWait(p.epfd, events[:], 0)
			if werr != syscall.EINTR {
				return n != 0 || werr != nil
			}
		}
	}
	for {
		if err := p.ep.Read(wait); err != nil || werr != nil {
			panic(fmt.Sprintf("wsgate: epoll_wait: %v %v", err, werr)) // EBADF/EFAULT/EINVAL: a bug, not a peer
		}
		batch, wbatch := ready[:0], writable[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == p.wakeR {
				syscall.Read(p.wakeR, drain[:])
				continue
			}
			if int(ev.Fd) == p.wepfd {
				wn, _ := syscall.EpollWait(p.wepfd, wevents[:], 0) // EINTR: level-triggered, seen next time
				for _, wev := range wevents[:max(wn, 0)] {
					if l := p.legs[wev.Fd]; l != nil {
						wbatch = append(wbatch, l)
					}
				}
				continue
			}
			if l := p.legs[ev.Fd]; l != nil {
				batch = append(batch, l)
			}
		}
		if len(p.legs) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		// Outside mu: relaying a leg's bytes must not hold up legs arming.
		// A leg that left meanwhile is no longer parked and is skipped.
		for _, l := range wbatch {
			l.writable()
		}
		for _, l := range batch {
			l.ready()
		}
		clear(batch)
		clear(wbatch)
	}
}
