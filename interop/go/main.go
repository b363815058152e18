// Command peer is the Go side of fdpass's interoperability suite
// (__test__/interop.spec.ts). It passes descriptors to or takes them from an
// fdpass process with one of the Go fd-passing libraries, uses what it
// receives for real, and reports what it saw as one JSON line on stdout.
//
//	peer <library> send <type> <endpoint> <file>
//	peer <library> recv <type> <endpoint>
//
// library: ftrvxmtrx, conduit, devlights or runc (see libraries.go).
// type: stream, seqpacket or dgram. endpoint: fd:N (an inherited socket),
// connect:PATH, or listen:PATH (prints {"listening":true} once bound).
//
// send: opens <file>, a TCP listener on 127.0.0.1 (conduit: a connected TCP
// socket instead), and a pipe, and passes all three; then reads the pipe's
// other end (and the connection) to EOF and reports what the fdpass side
// wrote there.
// recv: receives the three, reads the file, answers one connection on the
// listener (conduit: writes to the received connection), writes the pipe,
// and reports the file's content, the payloads that came with them, and
// whether the library made each descriptor close-on-exec.
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A library passes descriptors the way one Go package does it.
type library struct {
	// carriesConnection: the second resource is a connected TCP socket
	// (TransferConn/ReceiveConn) rather than a listener.
	carriesConnection bool
	// send passes files in the library's own way and returns the payloads
	// the caller gave the library (nil where it takes none).
	send func(conn *net.UnixConn, files []*os.File) ([][]byte, error)
	// recv takes count descriptors in the library's own way, with the
	// payload each message carried as far as the library exposes it.
	recv func(conn *net.UnixConn, count int) ([]*os.File, [][]byte, error)
}

func main() {
	// A peer whose test process died must not wait forever (a datagram
	// socket has no end of stream to wake it).
	time.AfterFunc(60*time.Second, func() {
		fmt.Fprintln(os.Stderr, "go peer: gave up after 60 s")
		os.Exit(3)
	})
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "go peer:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 4 {
		return fmt.Errorf("usage: peer <library> <send|recv> <stream|seqpacket|dgram> <endpoint> [file]")
	}
	lib, ok := libraries[args[0]]
	if !ok {
		return fmt.Errorf("unknown library %q", args[0])
	}
	conn, err := open(args[2], args[3])
	if err != nil {
		return err
	}
	defer conn.Close()
	switch args[1] {
	case "send":
		if len(args) < 5 {
			return fmt.Errorf("send needs a file to pass")
		}
		return send(lib, conn, args[4])
	case "recv":
		return recv(lib, conn)
	}
	return fmt.Errorf("unknown role %q", args[1])
}

func network(socketType string) (string, error) {
	switch socketType {
	case "stream":
		return "unix", nil
	case "seqpacket":
		return "unixpacket", nil
	case "dgram":
		return "unixgram", nil
	}
	return "", fmt.Errorf("unknown socket type %q", socketType)
}

// open reaches the fdpass side through the endpoint it was given.
func open(socketType, endpoint string) (*net.UnixConn, error) {
	netw, err := network(socketType)
	if err != nil {
		return nil, err
	}
	how, where, _ := strings.Cut(endpoint, ":")
	switch how {
	case "fd":
		n, err := strconv.Atoi(where)
		if err != nil {
			return nil, err
		}
		inherited := os.NewFile(uintptr(n), "channel")
		defer inherited.Close()
		c, err := net.FileConn(inherited)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	case "connect":
		return net.DialUnix(netw, nil, &net.UnixAddr{Name: where, Net: netw})
	case "listen":
		ln, err := net.ListenUnix(netw, &net.UnixAddr{Name: where, Net: netw})
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		report(map[string]any{"listening": true})
		return ln.AcceptUnix()
	}
	return nil, fmt.Errorf("unknown endpoint %q", endpoint)
}

func report(v map[string]any) {
	line, _ := json.Marshal(v)
	fmt.Println(string(line))
}

func hexes(payloads [][]byte) []any {
	out := make([]any, len(payloads))
	for i, p := range payloads {
		if p != nil {
			out[i] = hex.EncodeToString(p)
		}
	}
	return out
}

func send(lib library, conn *net.UnixConn, path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	result := map[string]any{}
	var second *os.File
	var client net.Conn
	if lib.carriesConnection {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		client, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		accepted, err := ln.Accept()
		ln.Close()
		if err != nil {
			return err
		}
		second, err = accepted.(*net.TCPConn).File()
		accepted.Close()
		if err != nil {
			return err
		}
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		result["port"] = ln.Addr().(*net.TCPAddr).Port
		second, err = ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			return err
		}
	}
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		return err
	}
	payloads, err := lib.send(conn, []*os.File{file, second, pipeW})
	// The descriptors are in flight now (or the send failed): this side's
	// copies go, so that EOF on the pipe and the connection means the fdpass
	// side closed its copies.
	file.Close()
	second.Close()
	pipeW.Close()
	if err != nil {
		return err
	}
	result["payloads"] = hexes(payloads)
	written, err := io.ReadAll(pipeR)
	pipeR.Close()
	if err != nil {
		return err
	}
	result["pipe"] = string(written)
	if client != nil {
		got, err := io.ReadAll(client)
		client.Close()
		if err != nil {
			return err
		}
		result["connection"] = string(got)
	}
	report(result)
	return nil
}

func recv(lib library, conn *net.UnixConn) error {
	files, payloads, err := lib.recv(conn, 3)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return err
	}
	if len(files) != 3 {
		return fmt.Errorf("received %d descriptors, expected 3", len(files))
	}
	// Whether the library set close-on-exec, before anything else touches them.
	cloexec := make([]bool, len(files))
	for i, f := range files {
		flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil {
			return err
		}
		cloexec[i] = flags&unix.FD_CLOEXEC != 0
	}
	content, err := io.ReadAll(files[0])
	if err != nil {
		return fmt.Errorf("reading the received file: %w", err)
	}
	if lib.carriesConnection {
		c, err := net.FileConn(files[1])
		if err != nil {
			return fmt.Errorf("the received connection: %w", err)
		}
		_, err = c.Write([]byte("go answered on the received connection\n"))
		c.Close()
		if err != nil {
			return err
		}
	} else {
		ln, err := net.FileListener(files[1])
		if err != nil {
			return fmt.Errorf("the received listener: %w", err)
		}
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			return err
		}
		_, err = c.Write([]byte("go accepted on the received listener\n"))
		c.Close()
		if err != nil {
			return err
		}
	}
	if _, err := files[2].Write([]byte("go wrote the received pipe")); err != nil {
		return err
	}
	report(map[string]any{"file": string(content), "payloads": hexes(payloads), "cloexec": cloexec})
	return nil
}
