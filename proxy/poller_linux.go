//go:build linux

package proxy

import (
	"errors"
	"sync"
	"syscall"
)

// poller is the event loop that watches idle wire legs (poll.go): one
// epoll instance, one goroutine blocked in epoll_wait while any leg is
// registered. A leg is armed one-shot when it parks: its event hands it to
// a goroutine of its own, which reads it until it idles again. The loop is
// owned by the registered legs: it ends when the last one leaves, and the
// next registration starts it again.
type poller struct {
	once    sync.Once
	initErr error
	epfd    int
	wakeR   int // read end of the pipe that wakes epoll_wait
	wakeW   int

	mu      sync.Mutex
	legs    map[int32]*polledLeg // guarded by mu: registered legs by fd
	running bool                 // guarded by mu: the loop's goroutine exists
}

var thePoller poller

// errNoPoller: the poller could not be set up; legs keep their goroutine.
var errNoPoller = errors.New("no event loop")

// pollEvents: readable, or the peer hung up; one event per arming (a
// woken leg is read on its own goroutine until it idles again).
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

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
		p.initErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, p.wakeR, &ev)
	})
	return p.initErr
}

// add registers l (its fd, while the connection is held open), armed.
func (p *poller) add(l *polledLeg) error {
	if err := p.init(); err != nil {
		return errNoPoller
	}
	var cerr error
	err := l.raw.Control(func(fd uintptr) {
		l.fd = int32(fd)
		p.mu.Lock()
		defer p.mu.Unlock()
		ev := syscall.EpollEvent{Events: pollEvents, Fd: l.fd}
		if cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); cerr != nil {
			return
		}
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

// remove unregisters l. The kernel forgets a closed fd by itself; the
// table entry goes here.
func (p *poller) remove(l *polledLeg) {
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

// rearm arms a parked l for its next readability event. It fails once
// the connection is closed.
func (p *poller) rearm(l *polledLeg) error {
	var cerr error
	err := l.raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: pollEvents, Fd: l.fd}
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return cerr
}

// loop waits for events and hands each ready leg to a goroutine of its
// own. It never blocks on a leg. When the last leg has left, it ends.
func (p *poller) loop() {
	var events [128]syscall.EpollEvent
	var drain [64]byte
	for {
		n, err := syscall.EpollWait(p.epfd, events[:], -1)
		if err != nil && err != syscall.EINTR {
			panic("wsgate: epoll_wait: " + err.Error()) // EBADF/EFAULT/EINVAL: a bug, not a peer
		}
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == p.wakeR {
				syscall.Read(p.wakeR, drain[:])
				continue
			}
			if l := p.legs[ev.Fd]; l != nil {
				l.ready()
			}
		}
		if len(p.legs) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}
