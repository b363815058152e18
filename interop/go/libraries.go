package main

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/ftrvxmtrx/fd"
	"golang.org/x/sys/unix"
)

// The Go fd-passing libraries fdpass is tested against.
//
// ftrvxmtrx is the published module itself. toolman.org/net/conduit and
// github.com/devlights/fdpassing are not served by the Go module proxy this
// suite installs from (the first's host is refused, the second declares
// "module fdpassing" and has no fetchable version), so conduit and devlights
// below make the same system calls those packages make, with the same
// buffers and checks, on golang.org/x/sys/unix and net (except that on a
// malformed message they close the descriptors that arrived, which those
// packages leak). runc is the pattern of
// runc's internal/cmsg SendFile/RecvFile, which is internal to runc and so
// cannot be imported.
var libraries = map[string]library{
	"ftrvxmtrx": {send: ftrvxmtrxSend, recv: ftrvxmtrxRecv},
	"conduit":   {carriesConnection: true, send: conduitSend, recv: conduitRecv},
	"devlights": {send: devlightsSend, recv: devlightsRecv},
	"runc":      {send: runcSend, recv: runcRecv},
}

// ftrvxmtrx/fd: Put sends every file in one sendmsg with no payload of its
// own (syscall.Sendmsg adds one zero byte on a stream or seqpacket socket);
// Get receives num descriptors from one message.
func ftrvxmtrxSend(conn *net.UnixConn, files []*os.File) ([][]byte, error) {
	return make([][]byte, 1), fd.Put(conn, files...)
}

func ftrvxmtrxRecv(conn *net.UnixConn, count int) ([]*os.File, [][]byte, error) {
	files, err := fd.Get(conn, count, []string{"file", "second", "pipe"})
	return files, make([][]byte, 1), err
}

// conduit: TransferFD is one unix.Sendmsg with no payload and one descriptor,
// which it then closes (TransferConn first clones the connection's file);
// ReceiveFD is one unix.Recvmsg into a control buffer of CmsgSpace(8) and
// wants exactly one control message with one descriptor.
func conduitSend(conn *net.UnixConn, files []*os.File) ([][]byte, error) {
	via, err := conn.File()
	if err != nil {
		return nil, err
	}
	defer via.Close()
	for _, f := range files {
		if err := unix.Sendmsg(int(via.Fd()), nil, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
			return nil, err
		}
	}
	return make([][]byte, len(files)), nil
}

func conduitRecv(conn *net.UnixConn, count int) ([]*os.File, [][]byte, error) {
	via, err := conn.File()
	if err != nil {
		return nil, nil, err
	}
	defer via.Close()
	var files []*os.File
	for i := 0; i < count; i++ {
		oob := make([]byte, unix.CmsgSpace(8))
		_, oobn, _, _, err := unix.Recvmsg(int(via.Fd()), nil, oob, 0)
		if err != nil {
			return files, nil, err
		}
		fds, err := onlyDescriptor(oob[:oobn])
		if err != nil {
			return files, nil, err
		}
		files = append(files, os.NewFile(uintptr(fds), "received"))
	}
	return files, make([][]byte, count), nil
}

// devlights/fdpassing: Send writes one zero byte with one descriptor through
// UnixConn.WriteMsgUnix; Recv reads one byte and CmsgSpace(4) of control data
// through UnixConn.ReadMsgUnix, fails on MSG_TRUNC, and wants exactly one
// control message with one descriptor.
func devlightsSend(conn *net.UnixConn, files []*os.File) ([][]byte, error) {
	for _, f := range files {
		if _, _, err := conn.WriteMsgUnix(make([]byte, 1), unix.UnixRights(int(f.Fd())), nil); err != nil {
			return nil, err
		}
	}
	return make([][]byte, len(files)), nil
}

func devlightsRecv(conn *net.UnixConn, count int) ([]*os.File, [][]byte, error) {
	var files []*os.File
	var payloads [][]byte
	for i := 0; i < count; i++ {
		dummy := make([]byte, 1)
		oob := make([]byte, unix.CmsgSpace(4))
		n, oobn, flags, _, err := conn.ReadMsgUnix(dummy, oob)
		if err != nil {
			return files, nil, err
		}
		if flags&unix.MSG_TRUNC != 0 {
			return files, nil, errors.New("control message is truncated")
		}
		fds, err := onlyDescriptor(oob[:oobn])
		if err != nil {
			return files, nil, err
		}
		files = append(files, os.NewFile(uintptr(fds), "received"))
		payloads = append(payloads, dummy[:n])
	}
	return files, payloads, nil
}

// runc's SendFile/RecvFile: the file's name is the payload (shorter than
// maxNameLen) and exactly one descriptor rides with it; the receiver uses
// MSG_CMSG_CLOEXEC, retries EINTR, and closes every descriptor it got when
// the message is not exactly one name and one descriptor.
const maxNameLen = 4096

func runcSend(conn *net.UnixConn, files []*os.File) ([][]byte, error) {
	via, err := conn.File()
	if err != nil {
		return nil, err
	}
	defer via.Close()
	var payloads [][]byte
	for _, f := range files {
		name := []byte(f.Name())
		if len(name) >= maxNameLen {
			return nil, fmt.Errorf("sendfd: filename too long: %s", f.Name())
		}
		for {
			err = unix.Sendmsg(int(via.Fd()), name, unix.UnixRights(int(f.Fd())), nil, 0)
			if err != unix.EINTR {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		payloads = append(payloads, name)
	}
	return payloads, nil
}

func runcRecv(conn *net.UnixConn, count int) ([]*os.File, [][]byte, error) {
	via, err := conn.File()
	if err != nil {
		return nil, nil, err
	}
	defer via.Close()
	var files []*os.File
	var payloads [][]byte
	for i := 0; i < count; i++ {
		name := make([]byte, maxNameLen)
		oobSpace := unix.CmsgSpace(4)
		oob := make([]byte, oobSpace)
		var n, oobn int
		for {
			n, oobn, _, _, err = unix.Recvmsg(int(via.Fd()), name, oob, unix.MSG_CMSG_CLOEXEC)
			if err != unix.EINTR {
				break
			}
		}
		if err != nil {
			return files, nil, err
		}
		if n >= maxNameLen || oobn != oobSpace {
			return files, nil, fmt.Errorf("recvfile: incorrect number of bytes read (n=%d oobn=%d)", n, oobn)
		}
		received, err := onlyDescriptor(oob[:oobn])
		if err != nil {
			return files, nil, err
		}
		files = append(files, os.NewFile(uintptr(received), string(name[:n])))
		payloads = append(payloads, name[:n])
	}
	return files, payloads, nil
}

// onlyDescriptor parses control data that must hold one SCM_RIGHTS message
// with one descriptor, closing every descriptor it found when it does not.
func onlyDescriptor(oob []byte) (int, error) {
	messages, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1, err
	}
	var all []int
	for i := range messages {
		fds, err := unix.ParseUnixRights(&messages[i])
		if err == nil {
			all = append(all, fds...)
		}
	}
	if len(messages) == 1 && len(all) == 1 {
		return all[0], nil
	}
	for _, fd := range all {
		unix.Close(fd)
	}
	return -1, fmt.Errorf("want one control message with one descriptor; got %d messages with %d descriptors", len(messages), len(all))
}
