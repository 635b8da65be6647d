"""A private network and mount namespace for a run that hosts Knative's data plane.

Knative's controllers write Service addresses (``http://NAME.NS.svc.cluster.local``, port
80) into the objects they reconcile, and its binaries (pure Go) read ``/etc/hosts``. Here
there is no cluster DNS and no kube-proxy, so a run that starts Knative first moves itself
into namespaces of its own (``isolate``): a network with only ``lo`` (fixed ports such as
the broker's 8080-8082 cannot clash with anything, and nothing leaves the machine), and a
mount namespace whose ``/etc/hosts`` is a file this run writes (``Hosts``). ClusterIPs are
loopback addresses (the API server's service range is ``127.96.0.0/16``), where a relay
plays kube-proxy. Needs root (or a user namespace that maps it).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
MARKER = "KUBEEVENT_PRIVATE_NETNS"  # set once this process has moved (children inherit it)
HOSTS_VARIABLE = "KUBEEVENT_HOSTS_FILE"  # the file bound over /etc/hosts there
BASE_HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(RuntimeError):
    """The namespaces cannot be made here; the message says why in one line."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        name = errno.errorcode.get(code, str(code))
        raise NamespaceError(f"{what} failed: {os.strerror(code)} ({name})")


def loopback_up() -> None:
    """``ip link set lo up``, without iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def new_network() -> None:
    """Move this process into a new network namespace with ``lo`` up."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    loopback_up()


def overlay_etc(layer: Path, hosts: Path | None) -> None:
    """In a new mount namespace of this process: ``/etc`` with ``layer/upper``'s files
    over it (an overlay; nothing is written to the real ``/etc``), and ``hosts`` bound
    over ``/etc/hosts`` again (an overlay shows the file beneath a bind mount)."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    upper, work = layer / "upper", layer / "work"
    work.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir=/etc,upperdir={upper},workdir={work}".encode()
    _check(_libc.mount(b"overlay", b"/etc", b"overlay", 0, options), "mount overlay on /etc")
    if hosts is not None:
        _check(_libc.mount(str(hosts).encode(), b"/etc/hosts", None, MS_BIND, None),
               "mount --bind hosts /etc/hosts")


def isolated() -> bool:
    return os.environ.get(MARKER) == "1"


def isolate(hosts: Path) -> None:
    """Move this process (before it starts threads) into a private network and mount
    namespace and bind ``hosts`` over ``/etc/hosts``. Idempotent for the process tree."""
    if isolated():
        return
    if os.geteuid() != 0:
        raise NamespaceError("Knative's data plane runs in a private network namespace, "
                             "which needs root")
    if threading.active_count() > 1:
        raise NamespaceError("cannot move a process with threads into new namespaces")
    _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWNS), "unshare(CLONE_NEWNET|CLONE_NEWNS)")
    # Mounts made here stay here.
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    loopback_up()
    hosts.parent.mkdir(parents=True, exist_ok=True)
    if not hosts.exists():
        hosts.write_text(BASE_HOSTS + f"127.0.1.1 {socket.gethostname()}\n")
    _check(_libc.mount(str(hosts).encode(), b"/etc/hosts", None, MS_BIND, None),
           "mount --bind hosts /etc/hosts")
    os.environ[MARKER] = "1"
    os.environ[HOSTS_VARIABLE] = str(hosts)


class Hosts:
    """``/etc/hosts`` of the private namespace: names added are seen by every process in
    it (the file is rewritten in place, so the bind mount keeps showing it; Go re-reads it
    within 5 s, Python at each lookup)."""

    def __init__(self, path: Path = Path("/etc/hosts")) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, address: str, *names: str) -> None:
        with self._lock:
            text = self.path.read_text()
            lines = [f"{address} {name}" for name in names
                     if f" {name}\n" not in text and not text.endswith(f" {name}")]
            if lines:
                with self.path.open("a") as out:  # in place: the same inode
                    out.write("".join(line + "\n" for line in lines))

    @staticmethod
    def source() -> Path:
        """The file behind ``/etc/hosts`` (to bind it again in a nested mount namespace)."""
        return Path(os.environ.get(HOSTS_VARIABLE) or "/etc/hosts")

    def address(self, name: str) -> str | None:
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) > 1 and name in parts[1:]:
                return parts[0]
        return None
