//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// rawConnOf returns the socket under c when c is a plain TCP or Unix
// connection, so reads can wait for readability without a buffer.
func rawConnOf(c net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil // TLS and wrapped connections: read through net.Conn
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readFD is one non-blocking read(2), retried on EINTR.
func readFD(fd uintptr, p []byte) (int, error) { return retryEINTR(syscall.Read, fd, p) }

// writeFD is one non-blocking write(2), retried on EINTR.
func writeFD(fd uintptr, p []byte) (int, error) { return retryEINTR(syscall.Write, fd, p) }

// retryEINTR runs rw until a signal does not interrupt it; n is never
// negative.
func retryEINTR(rw func(int, []byte) (int, error), fd uintptr, p []byte) (int, error) {
	for {
		n, err := rw(int(fd), p)
		if err != syscall.EINTR {
			return max(n, 0), err
		}
	}
}
