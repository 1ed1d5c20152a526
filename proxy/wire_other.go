//go:build !unix

package proxy

import (
	"net"
	"syscall"
)

// rawConnOf: without unix read(2), every leg reads through net.Conn.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func readFD(uintptr, []byte) (int, error)  { return 0, syscall.EINVAL }
func writeFD(uintptr, []byte) (int, error) { return 0, syscall.EINVAL }
