"""Turn the node agent's child into a container process, then exec the container's command.

Development tooling, run by nodeagent.py as root with `python -I -S containerinit.py FD`:
the container's spec comes as JSON on file descriptor FD (never on the command line, which
every user can read, nor on disk: the environment may hold secrets). Standard library only,
so that it starts fast and depends on nothing a pod could influence.

In a mount namespace of its own, it
  1. exposes the folders the interpreter needs that sit below a folder other users cannot
     traverse (`expose`: a read-only tmpfs over that folder, the needed folders bind-mounted
     back at their own paths), so that the interpreter runs as any user and nothing else of
     that folder shows;
  2. bind-mounts the private folders the pod mounts (emptyDir volumes, a private /tmp) and
     the private termination-message file on their paths in the container;
  3. hides the cluster's state folder under an empty, unreadable tmpfs;
then drops to the pod's user, group and supplementary groups (clearing root's), sets
no_new_privs so that no set-user-ID program can lift it back, enters its working folder and
execs the command, which keeps this process id: its exit status is the command's own.

Any failure before the exec is written to the error file (opened before the privileges are
dropped, closed by the exec) and ends the process with status 128, as a runtime reports a
container that could not start.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38

LIBC = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def c(s: str | None) -> bytes | None:
        return os.fsencode(s) if s is not None else None
    check(LIBC.mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)), f"mount {target}")


def bind(source: str, target: str, readonly: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def mount_point(path: str, like: str) -> None:
    """A file or folder to mount on, made when missing (as a runtime does in the image)."""
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.isdir(like):
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def expose(blocked: str, needed: list[str]) -> None:
    """Only `needed` (read-only) shows below `blocked`, which every user may now traverse."""
    handles = [(path, os.open(path, os.O_PATH)) for path in needed]
    mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path, fd in handles:
        os.makedirs(path, mode=0o755, exist_ok=True)
        bind(f"/proc/self/fd/{fd}", path, readonly=True)
        os.close(fd)
    mount(None, blocked, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")


def hide(path: str) -> None:
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=000,size=4k")


def _under(path: str, folder: str) -> bool:
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/") or folder == "/"


def prepare(spec: dict[str, Any]) -> None:
    os.umask(0o022)
    check(LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mounts = spec.get("mounts", [])
    # Every source is opened before anything is mounted: a mount (the private /tmp) may cover
    # where a later source, or the repository with its interpreter, lives (a clone in /tmp).
    sources = [os.open(m["source"], os.O_PATH) for m in mounts]
    keep = [(p, os.open(p, os.O_PATH)) for p in spec.get("keep", []) if os.path.exists(p)]
    for blocked, needed in spec.get("expose", {}).items():
        expose(blocked, needed)
    for m, fd in zip(mounts, sources, strict=True):
        mount_point(m["target"], f"/proc/self/fd/{fd}")
        bind(f"/proc/self/fd/{fd}", m["target"], readonly=bool(m.get("readonly")))
        os.close(fd)
    for path, fd in keep:
        # What a mount covered but the container needs (the interpreter, the code): back, read-only.
        if any(_under(path, m["target"]) for m in mounts):
            os.makedirs(path, mode=0o755, exist_ok=True)
            bind(f"/proc/self/fd/{fd}", path, readonly=True)
        os.close(fd)
    for path in spec.get("hide", []):
        hide(path)
    uid, gid, groups = int(spec["uid"]), int(spec["gid"]), [int(g) for g in spec.get("groups", [])]
    if 0 in (uid, gid, *groups):
        raise PermissionError("a container never runs as root or in group root on the local node")
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.chdir(spec["cwd"])


def main() -> None:
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        spec = json.loads(f.read())
    errors = os.open(spec["error_file"], os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    argv = spec["argv"]
    try:
        prepare(spec)
        os.execve(argv[0], argv, spec["env"])
    except Exception as exc:  # noqa: BLE001 - every failure is the container's start error
        message = f"cannot start {argv[0]!r}: {exc}"
        os.write(errors, message.encode())
        os.write(2, f"containerinit: {message}\n".encode())
        os._exit(128)


if __name__ == "__main__":
    main()
