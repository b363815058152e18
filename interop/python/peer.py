"""The Python side of fdpass's interoperability suite (__test__/interop.spec.ts).

    peer.py <library> send <type> <endpoint> <file>
    peer.py <library> recv <type> <endpoint>

library: ``socket`` (socket.send_fds / socket.recv_fds) or ``multiprocessing``
(multiprocessing.reduction.sendfds / recvfds), both of the standard library.
type: stream, seqpacket or dgram. endpoint: fd:N (an inherited socket),
connect:PATH, or listen:PATH (prints {"listening": true} once bound).

send: opens <file>, a TCP listener on 127.0.0.1 and a pipe, passes all three
in one message, then reads the pipe's other end to EOF and reports what the
fdpass side wrote there. recv: receives the three in one message, reads the
file, answers one connection on the listener, writes the pipe, and reports the
file's content, the payload that came with them, and whether the library made
them close-on-exec. One JSON line on stdout.
"""

import json
import os
import signal
import socket
import sys
from multiprocessing import reduction

TYPES = {"stream": socket.SOCK_STREAM, "seqpacket": socket.SOCK_SEQPACKET, "dgram": socket.SOCK_DGRAM}
NAMES = b"file,listener,pipe"


def report(**fields):
    print(json.dumps(fields), flush=True)


def open_endpoint(kind, endpoint):
    how, _, where = endpoint.partition(":")
    if how == "fd":
        sock = socket.socket(fileno=int(where))
        sock.setblocking(True)
        return sock
    sock = socket.socket(socket.AF_UNIX, kind)
    if how == "connect":
        sock.connect(where)
        return sock
    if how == "listen":
        sock.bind(where)
        sock.listen(1)
        report(listening=True)
        conn, _ = sock.accept()
        sock.close()
        return conn
    raise SystemExit(f"unknown endpoint {endpoint!r}")


def send_socket(sock, fds):
    socket.send_fds(sock, [NAMES], fds)
    return [NAMES.hex()]


def recv_socket(sock, count):
    data, fds, flags, _ = socket.recv_fds(sock, 1024, count)
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise SystemExit("recv_fds: control data truncated")
    return fds, [data.hex()]


def send_multiprocessing(sock, fds):
    # sendfds puts the count in its one data byte; the caller gives no payload.
    reduction.sendfds(sock, fds)
    return [None]


def recv_multiprocessing(sock, count):
    return reduction.recvfds(sock, count), [None]


LIBRARIES = {
    "socket": (send_socket, recv_socket),
    "multiprocessing": (send_multiprocessing, recv_multiprocessing),
}


def send(library, sock, path):
    file = os.open(path, os.O_RDONLY)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pipe_r, pipe_w = os.pipe()
    try:
        payloads = LIBRARIES[library][0](sock, [file, listener.fileno(), pipe_w])
    finally:
        # In flight now: these copies go, so EOF on the pipe means the fdpass
        # side closed its copy.
        os.close(file)
        listener.close()
        os.close(pipe_w)
    with os.fdopen(pipe_r, "rb") as pipe:
        written = pipe.read()
    report(port=port, payloads=payloads, pipe=written.decode())


def recv(library, sock):
    fds, payloads = LIBRARIES[library][1](sock, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise SystemExit(f"received {len(fds)} descriptors, expected 3")
    # Whether the library made them close-on-exec, before anything else touches them.
    cloexec = [not os.get_inheritable(fd) for fd in fds]
    with os.fdopen(fds[0], "rb") as file:
        content = file.read()
    with socket.socket(fileno=fds[1]) as listener:
        listener.setblocking(True)
        conn, _ = listener.accept()
        with conn:
            conn.sendall(f"python {library} accepted on the received listener\n".encode())
    with os.fdopen(fds[2], "wb") as pipe:
        pipe.write(f"python {library} wrote the received pipe".encode())
    report(file=content.decode(), payloads=payloads, cloexec=cloexec)


def main(argv):
    # A peer whose test process died must not wait forever (a datagram socket
    # has no end of stream to wake it).
    signal.alarm(60)
    if len(argv) < 4 or argv[0] not in LIBRARIES or argv[2] not in TYPES:
        raise SystemExit(__doc__)
    library, role, kind, endpoint = argv[:4]
    with open_endpoint(TYPES[kind], endpoint) as sock:
        if role == "send":
            send(library, sock, argv[4])
        elif role == "recv":
            recv(library, sock)
        else:
            raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
