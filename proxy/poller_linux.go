//go:build linux

package proxy

import (
	"runtime"
	"sync"
	"syscall"
)

// poller is the event loop that watches idle wire legs (poll.go): one
// epoll instance, one goroutine blocked in epoll_wait while any leg is
// registered, and a small pool of workers. A leg is registered
// edge-triggered: an event hands a parked leg to an idle worker (or, when
// all are busy, to a goroutine of its own, so a stalled peer never holds up
// others), which reads until nothing is left and parks it again. The loop and
// its workers are owned by the registered legs: they end when the last one
// leaves, and the next registration starts them again.
type poller struct {
	once    sync.Once
	initErr error
	epfd    int
	wakeR   int // read end of the pipe that wakes epoll_wait
	wakeW   int

	mu      sync.Mutex
	legs    map[int32]*polledLeg // guarded by mu: registered legs by fd
	running bool                 // guarded by mu: the loop's goroutine exists
	work    chan *polledLeg      // guarded by mu: idle workers receive here
}

var thePoller poller

// epollET is EPOLLET as the uint32 epoll_event.events holds it (syscall's
// constant is a negative int).
const epollET = 1 << 31

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

// add registers l (its fd, while the connection is held open) for
// edge-triggered readability: an event each time bytes arrive.
func (p *poller) add(l *polledLeg) error {
	if err := p.init(); err != nil {
		return err
	}
	var cerr error
	err := l.raw.Control(func(fd uintptr) {
		l.fd = int32(fd)
		p.mu.Lock()
		defer p.mu.Unlock()
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: l.fd}
		if cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); cerr != nil {
			return
		}
		p.legs[l.fd] = l
		if !p.running {
			p.running = true
			p.work = make(chan *polledLeg)
			for range runtime.GOMAXPROCS(0) * workersPerProc {
				go worker(p.work)
			}
			go p.loop(p.work)
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

// workersPerProc sizes the worker pool: a worker relays one burst at a time,
// and may wait mid-frame or on a slow peer.
const workersPerProc = 4

// dispatch runs l's pump on an idle worker, or on a goroutine of its own
// when none is idle.
func (p *poller) dispatch(l *polledLeg) {
	p.mu.Lock()
	p.dispatchLocked(l)
	p.mu.Unlock()
}

func (p *poller) dispatchLocked(l *polledLeg) {
	select {
	case p.work <- l:
	default:
		go l.p.readReady()
	}
}

// worker relays bursts handed to it until the loop ends.
func worker(work <-chan *polledLeg) {
	for l := range work {
		l.p.readReady()
	}
}

// loop waits for events and hands each ready leg to a worker. It never
// blocks on a leg. When the last leg has left, it stops its workers and
// ends.
func (p *poller) loop(work chan *polledLeg) {
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
			close(work)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}
