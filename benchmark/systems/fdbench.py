"""Python's socket.send_fds / recv_fds between two processes (os.fork over a
socketpair), the same protocol as fdbench.c. Blocking sockets; the receiver
closes every descriptor.

    python3 fdbench.py throughput SECONDS FDS_PER_MSG -> {"fds": N, "seconds": S}
    python3 fdbench.py pingpong SECONDS               -> {"rttUs": [...]}
"""
import json
import os
import socket
import struct
import sys
import time


def receiver(sock, pingpong):
    received = 0
    while True:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1, 253)
        for fd in fds:
            os.close(fd)
        received += len(fds)
        if data == b"E":
            sock.sendall(struct.pack("<Q", received))
            return
        if pingpong:
            sock.sendall(b"a")


def main():
    mode, seconds = sys.argv[1], float(sys.argv[2])
    pingpong = mode == "pingpong"
    per_msg = 1 if pingpong else int(sys.argv[3])
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        parent.close()
        receiver(child, pingpong)
        os._exit(0)
    child.close()
    fd = os.open("/dev/null", os.O_RDONLY)
    fds = [fd] * per_msg
    rtt = []
    sent = 0
    start = time.perf_counter()
    stop = start + seconds
    while True:
        if pingpong:
            t0 = time.perf_counter()
            socket.send_fds(parent, [b"M"], fds)
            parent.recv(1)
            rtt.append((time.perf_counter() - t0) * 1e6)
            if time.perf_counter() >= stop:
                break
        else:
            for _ in range(64):
                socket.send_fds(parent, [b"M"], fds)
            sent += 64 * per_msg
            if time.perf_counter() >= stop:
                break
    socket.send_fds(parent, [b"E"], [])
    received = struct.unpack("<Q", parent.recv(8, socket.MSG_WAITALL))[0]
    elapsed = time.perf_counter() - start
    os.waitpid(pid, 0)
    if pingpong:
        print(json.dumps({"rttUs": [round(x, 2) for x in rtt]}))
    else:
        if received != sent:
            sys.exit(f"sent {sent}, received {received}")
        print(json.dumps({"fds": received, "seconds": elapsed}))


main()
