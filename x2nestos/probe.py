"""The probe of a host reached over SSH: one POSIX-sh script (sent on stdin, no Python needed
there) prints the files and kernel facts the host-fact readers need; its records are unpacked,
checked, into a local tree, so remote and local plans are the same code. stdlib + errors only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, FrozenSet, Iterator, List, Optional, Sequence, Tuple

from nestos_installer.errors import NestosError
from x2nestos import identity

# The script's functions (records: see its header); the passes append their calls.
LIB = r"""# x2nestos probe: prints the files and kernel facts x2nestos reads, as records, on stdout.
# POSIX sh; changes nothing. Shell builtins read the files: starting a program costs ~0.1 s
# on a slow (emulated) host, so only a handful run (ip, ls, df, grep, od).
# Records: "@F path" (a text file: its lines follow, each prefixed "|"; "@T path" if it was
# cut at the size limit), "@X path" (a binary file as od hex lines, prefixed "|"), "@D path"
# (a directory), "@N path" (an entry such as holders/dm-0), "@C name length" + that many
# bytes + newline (a program's output), "@E" (the end). No path holds a newline.
# Arguments (taken before sudo resets the environment): $SSH_CONNECTION and $LOGNAME.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
R=${X2N_PROBE_ROOT:-}
MAX=@MAX@
NL='
'

# text PATH...: each regular file, at most MAX bytes, read with builtins only
text() {
    for p in "$@"; do
        case $p in *"$NL"* | *'*'* | *'?'*) continue ;; esac
        [ -f "$R$p" ] && [ -r "$R$p" ] || continue
        printf '@F %s\n' "$p"
        n=0
        while IFS= read -r l || [ -n "$l" ]; do
            n=$((n + ${#l} + 1))
            [ "$n" -le "$MAX" ] || { printf '@T %s\n' "$p"; break; }
            printf '|%s\n' "$l"
        done < "$R$p"
    done
}

# glob PATTERN...: text of every file the patterns match
glob() {
    for g in "$@"; do
        for p in "$R"$g; do text "${p#"$R"}"; done
    done
}

# binary PATH: a small binary file as hex (one od each: use sparingly)
binary() {
    [ -f "$R$1" ] && [ -r "$R$1" ] || return 0
    printf '@X %s\n' "$1"
    od -An -v -tx1 -N 4096 "$R$1" 2>/dev/null | while IFS= read -r l; do printf '|%s\n' "$l"; done
}

dir() { if [ -d "$R$1" ]; then printf '@D %s\n' "$1"; fi; }

# entries DIR: the names in DIR (holders, slaves), not what they point to
entries() {
    for e in "$R$1"/*; do
        [ -e "$e" ] || [ -h "$e" ] || continue
        case $e in *"$NL"*) continue ;; esac
        printf '@N %s\n' "$1/${e##*/}"
    done
}

# run NAME ARGV...: a program's output as record NAME (none if it fails)
run() {
    name=$1
    shift
    out=$("$@" 2>/dev/null) || return 0
    printf '@C %s %s\n%s\n' "$name" "${#out}" "$out"
}

# ipjson NAME ARGS...: `ip ARGS` as record NAME; under X2N_PROBE_ROOT (a test hook: a host
# tree instead of /) the JSON that tree stores
ipjson() {
    name=$1
    shift
    if [ -z "$R" ]; then
        run "$name" ip "$@"
    elif [ -f "$R/run/x2nestos/$name" ]; then
        run "$name" cat "$R/run/x2nestos/$name"
    fi
}

kernel() {
    text /proc/cmdline /proc/meminfo /proc/swaps /proc/self/mountinfo /proc/self/status \
        /proc/1/comm /proc/sys/kernel/osrelease /proc/sys/kernel/hostname \
        /proc/sys/kernel/kexec_load_disabled /sys/kernel/kexec_loaded \
        /sys/kernel/security/lockdown /sys/hypervisor/type /run/systemd/container \
        /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/product_name \
        /sys/class/dmi/id/bios_vendor /sys/class/dmi/id/board_vendor
    if [ -r "$R/proc/sys/kernel/arch" ]; then text /proc/sys/kernel/arch; else
        run uname-m uname -m; fi
    binary /proc/1/environ
    for p in /.dockerenv /run/.containerenv; do
        if [ -e "$R$p" ]; then printf '@N %s\n' "$p"; fi
    done
    dir /run/systemd/system
    dir /sys/firmware/efi
    for p in "$R"/sys/firmware/efi/efivars/SecureBoot-*; do
        if [ -f "$p" ]; then binary "${p#"$R"}"; fi
    done
    rel=
    read -r rel < "$R/proc/sys/kernel/osrelease" 2>/dev/null || :
    for p in "/boot/config-$rel" "/lib/modules/$rel/config"; do
        [ -n "$rel" ] && [ -r "$R$p" ] || continue
        run "kconfig $p" grep -E '^CONFIG_KEXEC(_FILE)?=' "$R$p"
        break
    done
    run cpu-flags grep -m1 '^flags' "$R/proc/cpuinfo"
}

block() {
    for d in "$R"/sys/block/*; do
        [ -d "$d" ] || continue
        b=${d#"$R"}
        dir "$b"
        text "$b/dev" "$b/size" "$b/removable" "$b/ro" "$b/serial" "$b/wwid" "$b/device/serial" \
            "$b/device/wwid" "$b/device/model" "$b/dm/name" "$b/dm/uuid" "$b/uevent"
        entries "$b/holders"
        entries "$b/slaves"
        for p in "$d"/*/partition; do
            [ -f "$p" ] || continue
            q=${p%/partition}
            q=${q#"$R"}
            dir "$q"
            text "$q/dev" "$q/size" "$q/partition" "$q/uevent"
            entries "$q/holders"
        done
    done
    run dev-by-id ls -l "$R/dev/disk/by-id"
    run dev-mapper ls -l "$R/dev/mapper"
}

network() {
    for d in "$R"/sys/class/net/*; do
        if [ -d "$d" ]; then text "${d#"$R"}/address" "${d#"$R"}/bonding_slave/perm_hwaddr"; fi
    done
    text /etc/resolv.conf /etc/sysconfig/network /etc/network/interfaces
    glob '/etc/sysconfig/network-scripts/ifcfg-*' '/etc/network/interfaces.d/*' \
        '/etc/netplan/*.yaml' '/etc/systemd/network/*.network' '/etc/systemd/network/*.netdev' \
        '/etc/NetworkManager/system-connections/*'
    ipjson ip-addr.json -d -j addr show
    ipjson ip-route.json -j route show table main
    ipjson ip-route6.json -j -6 route show table main
    # the login's $SSH_CONNECTION ("client port server port"): the route back to the controller
    set -- ${1:-}
    if [ $# -eq 4 ]; then
        s="$1 $2 $3 $4"
        printf '@C ssh-connection %s\n%s\n' "${#s}" "$s"
        ipjson ip-route-ssh.json -j route get "$1"
    fi
}

identity() {
    text /etc/passwd /etc/group /etc/login.defs /etc/hostname /etc/os-release \
        /usr/lib/os-release /etc/ssh/sshd_config
    glob '/etc/ssh/sshd_config.d/*' '/etc/ssh/ssh_host_*'
}

facts() {
    if [ -n "${1:-}" ]; then printf '@C login-user %s\n%s\n' "${#1}" "$1"; fi
    tools=
    for t in kexec sha256sum systemctl sudo dnf yum apt-get zypper python3; do
        if command -v "$t" >/dev/null 2>&1; then tools="$tools $t"; fi
    done
    printf '@C tools %s\n%s\n' "${#tools}" "$tools"
    d=@STAGING@
    while [ ! -d "$R$d" ] && [ "$d" != / ]; do
        d=${d%/*}
        d=${d:-/}
    done
    run "staging-df $d" df -Pk "$R$d"
}

"""

MAIN = r"""kernel
block
network "${1:-}"
identity
facts "${2:-}"
printf '@E\n'
"""

MAX_FILE = 1 << 20  # per file, as hostfacts.MAX_HOST_FILE
MAX_STREAM = 64 << 20  # the whole probe output
MAX_RECORDS = 100_000
MAX_PATH = 4096
RUNTIME = "run/x2nestos"  # where the readers find program outputs (netstate's ip-*.json)
# program outputs kept as files of the tree, by record name
OUTPUTS = (
    "ip-addr.json",
    "ip-route.json",
    "ip-route6.json",
    "ip-route-ssh.json",
    "tools",
    "ssh-connection",
    "login-user",
)
LINK_DIRS = {"dev-by-id": "dev/disk/by-id", "dev-mapper": "dev/mapper"}
LINK_LINE = re.compile(
    r" ([A-Za-z0-9_.:+@=,#-]{1,255}) -> ((?:\.\./){1,3}[A-Za-z0-9_.:+-]{1,255})$"
)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProbeError(NestosError):
    """The probe's output is malformed, too large or names a path we refuse."""


def script(staging: str, calls: Optional[Sequence[str]] = None) -> str:
    """The probe script: its functions, then `calls` (a later pass) or the main collection."""
    lib = LIB.replace("@MAX@", str(MAX_FILE)).replace("@STAGING@", shlex.quote(staging))
    if calls is None:
        return lib + MAIN
    return lib + "\n".join(calls) + "\nprintf '@E\\n'\n"


def glob_words(pattern: str) -> str:
    """A glob pattern for the shell: its literal parts quoted, `*` and `?` left to the shell."""
    parts = re.split(r"([*?])", pattern)
    return "".join(p if p in ("*", "?") else shlex.quote(p) for p in parts if p)


def text_calls(paths: Sequence[str]) -> List[str]:
    """Shell calls reading `paths` (absolute; globs with * or ? allowed) on the host."""
    out = []
    for p in paths:
        if not p.startswith("/") or CONTROL.search(p):
            continue
        if "*" in p or "?" in p:
            out.append(f'for p in "$R"{glob_words(p)}; do text "${{p#"$R"}}"; done')
        else:
            out.append(f"text {shlex.quote(p)}")
    return out


def check_path(path: str) -> str:
    """`path` (absolute, from the host) as a relative path of the tree; hostile ones refused."""
    if not path.startswith("/") or len(path) > MAX_PATH or CONTROL.search(path):
        raise ProbeError(f"probe named a path we refuse: {path[:200]!r}")
    parts = path.split("/")[1:]
    if not parts or any(p in ("", ".", "..") for p in parts) or len(parts) > 32:
        raise ProbeError(f"probe named a path we refuse: {path[:200]!r}")
    rel = "/".join(parts)
    if rel == RUNTIME or rel.startswith(RUNTIME + "/"):
        raise ProbeError(f"probe named a path we reserve: {path!r}")
    return rel


@dataclass(frozen=True)
class Record:
    kind: str  # F X D N C
    name: str  # the host path (F X D N) or the output's name (C)
    data: bytes = b""
    cut: bool = False  # larger than MAX_FILE: the reader sees no such file


class Reader:
    """The probe's records from its stdout, bounded in size and count."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.read = 0

    def line(self) -> bytes:
        line = self.stream.readline(MAX_FILE + 2)
        self.read += len(line)
        if self.read > MAX_STREAM:
            raise ProbeError(f"probe output is larger than {MAX_STREAM} bytes")
        if line and not line.endswith(b"\n"):
            raise ProbeError("probe output has a line that is too long or cut")
        return line

    def exact(self, n: int) -> bytes:
        if n < 0 or self.read + n > MAX_STREAM:
            raise ProbeError(f"probe output is larger than {MAX_STREAM} bytes")
        data = self.stream.read(n + 1)
        self.read += len(data)
        if len(data) != n + 1 or not data.endswith(b"\n"):
            raise ProbeError("probe output is cut or its lengths do not match")
        return data[:-1]

    def records(self) -> Iterator[Record]:
        """Every record; ProbeError unless the stream ends with the end record."""
        line = self.line()
        count = 0
        while line:
            count += 1
            if count > MAX_RECORDS:
                raise ProbeError(f"probe output has more than {MAX_RECORDS} records")
            head = line[:-1].decode("utf-8", "surrogateescape")
            kind, _, name = head[1:].partition(" ")
            if not head.startswith("@") or kind not in ("F", "X", "D", "N", "C", "E", "T"):
                raise ProbeError(f"probe output is malformed near {head[:80]!r}")
            if kind == "E":
                return
            if kind == "C":
                name, _, length = name.rpartition(" ")
                if not length.isdigit() or len(length) > 9:
                    raise ProbeError(f"probe output is malformed near {head[:80]!r}")
                yield Record(kind, name, self.exact(int(length)))
                line = self.line()
                continue
            if kind == "T":
                yield Record("F", name, cut=True)
                line = self.line()
                continue
            body: List[bytes] = []
            size = 0
            line = self.line()
            while line.startswith(b"|"):
                body.append(line[1:])
                size += len(line) - 1
                if size > MAX_FILE + 1:
                    raise ProbeError(f"probe sent more than {MAX_FILE} bytes of {name!r}")
                line = self.line()
            yield Record(kind, name, b"".join(body))
        raise ProbeError("probe output ended early (no end record): the probe did not finish")


class Tree:
    """A local directory holding what the probe sent, written with our own checks: 0700
    directories, 0600 files, never through a symlink, symlinks only as by-id/mapper links."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes: List[str] = []
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _parent(self, rel: str) -> Path:
        d = self.root
        for part in rel.split("/")[:-1]:
            d = d / part
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                os.mkdir(d, 0o700)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise ProbeError(f"probe sent /{rel} below a non-directory")
        return d

    def write(self, rel: str, data: bytes) -> None:
        path = self._parent(rel) / rel.rsplit("/", 1)[-1]
        if os.path.lexists(path):
            return  # a later pass or a second glob naming the same file: keep the first
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def mkdir(self, rel: str) -> None:
        path = self._parent(rel) / rel.rsplit("/", 1)[-1]
        if not os.path.lexists(path):
            os.mkdir(path, 0o700)
        elif not stat.S_ISDIR(os.lstat(path).st_mode):
            raise ProbeError(f"probe sent /{rel} as a directory and as a file")

    def remove(self, rel: str) -> None:
        path = self.root / rel
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)

    def links(self, where: str, listing: bytes) -> None:
        """Symlinks from `ls -l` of /dev/disk/by-id or /dev/mapper: names and targets checked,
        each target resolving inside the tree's dev/."""
        for raw in listing.decode("utf-8", "replace").splitlines():
            m = LINK_LINE.search(raw)
            if not raw.startswith("l") or m is None:
                continue
            name, target = m.groups()
            inside = os.path.normpath(os.path.join(where, target))
            if not inside.startswith("dev/") or name in (".", ".."):
                continue
            link = self._parent(f"{where}/{name}") / name
            if not os.path.lexists(link):
                os.symlink(target, link)

    def add(self, rec: Record) -> None:
        if rec.kind == "C":
            self.output(rec.name, rec.data)
            return
        rel = check_path(rec.name)
        if rec.kind == "D":
            self.mkdir(rel)
        elif rec.cut:
            self.remove(rel)
            self.notes.append(f"{rec.name}: larger than {MAX_FILE} bytes, not read")
        elif rec.kind == "X":
            self.write(rel, _unhex(rec.data, rec.name))
        elif rec.kind == "N" or rec.data or not rel.startswith("sys/"):
            self.write(rel, rec.data)  # an empty sysfs attribute could not be read: absent

    def output(self, name: str, data: bytes) -> None:
        """A program's output: where the readers expect what it says."""
        kind, _, arg = name.partition(" ")
        if kind in OUTPUTS:
            self.write(f"{RUNTIME}/{kind}", data)
        elif kind == "uname-m":
            self.write("proc/sys/kernel/arch", data.strip() + b"\n")
        elif kind == "cpu-flags":
            self.write("proc/cpuinfo", data + b"\n")
        elif kind == "kconfig":
            rel = check_path(arg)
            if rel.startswith(("boot/config-", "lib/modules/")):
                self.write(rel, data + b"\n")
        elif kind in LINK_DIRS:
            self.links(LINK_DIRS[kind], data)
        elif kind == "staging-df":
            free = _df_available(data)
            if free is not None:
                self.write(f"{RUNTIME}/staging-free", f"{arg} {free}\n".encode())


def _unhex(data: bytes, name: str) -> bytes:
    try:
        return bytes.fromhex(data.decode("ascii", "replace"))
    except ValueError:
        raise ProbeError(f"probe sent {name!r} as malformed hex") from None


def _df_available(data: bytes) -> Optional[int]:
    """Bytes available from `df -Pk` (the last line's fourth field, in KiB)."""
    lines = data.decode("utf-8", "replace").strip().splitlines()
    fields = lines[-1].split() if len(lines) >= 2 else []
    return int(fields[3]) * 1024 if len(fields) >= 6 and fields[3].isdigit() else None


@dataclass(frozen=True)
class Snapshot:
    """What a probe found: the tree the readers plan from, plus what only a probe knows."""

    tree: Path
    tools: FrozenSet[str]  # programs found on the host's PATH (kexec, sha256sum, ...)
    ssh_client: Optional[str]  # the controller's address as the host sees it
    ssh_interface: Optional[str]  # the interface holding the controller's SSH session
    login_user: Optional[str] = None  # who logged in (before sudo)
    notes: Tuple[str, ...] = ()

    def has(self, tool: str) -> bool:
        return tool in self.tools


# execute(script, consume): runs `script` with sh on the host, hands its stdout to `consume`
Execute = Callable[[str, Callable[[IO[bytes]], None]], None]
MAX_PASSES = 4  # Include files may include more files: each pass fetches what the last named


def _ifupdown_sources(tree: Path) -> List[str]:
    """`source` / `source-directory` targets of /etc/network/interfaces (as globs)."""
    try:
        text = (tree / "etc/network/interfaces").read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("source", "source-directory"):
            out.append(parts[1] + ("/*" if parts[0] == "source-directory" else ""))
    return ["/" + p.lstrip("/") for p in out]


def wanted(tree: Path) -> List[str]:
    """Paths the readers would read that the tree does not have yet."""
    out = []
    for p in identity.probe_paths(tree) + _ifupdown_sources(tree):
        if ".." in p.split("/") or (
            ("*" not in p and "?" not in p) and (tree / p.lstrip("/")).exists()
        ):
            continue
        out.append(p)
    return list(dict.fromkeys(out))


def collect(execute: Execute, dest: Path, staging: str) -> Snapshot:
    """Run the probe (and the passes its files call for) into the tree `dest`."""
    tree = Tree(dest)

    def consume(stream: IO[bytes]) -> None:
        for rec in Reader(stream).records():
            tree.add(rec)

    execute(script(staging), consume)
    asked: List[str] = []
    for _ in range(MAX_PASSES):
        more = [p for p in wanted(dest) if p not in asked]
        if not more:
            break
        asked += more
        execute(script(staging, text_calls(more)), consume)
    user = _output(dest, "login-user").strip()
    client, dev = _ssh_session(dest)
    tools = frozenset(_output(dest, "tools").split())
    return Snapshot(dest, tools, client, dev, user or None, tuple(tree.notes))


def _output(tree: Path, name: str) -> str:
    try:
        return (tree / RUNTIME / name).read_text(errors="replace")
    except OSError:
        return ""


def _ssh_session(tree: Path) -> Tuple[Optional[str], Optional[str]]:
    """(controller address, interface holding the session) from $SSH_CONNECTION + ip route."""
    words = _output(tree, "ssh-connection").split()
    client = words[0] if len(words) == 4 else None
    try:
        routes = json.loads(_output(tree, "ip-route-ssh.json"))
    except ValueError:
        return client, None
    dev = routes[0].get("dev") if isinstance(routes, list) and routes else None
    if not isinstance(dev, str) or dev == "lo" or not re.fullmatch(r"[\w.:@-]{1,15}", dev):
        return client, None
    return client, dev
