"""Confine a function worker process: memory limit, no privileges, and a Landlock sandbox.

The worker calls ``confine`` after it has loaded the function modules. From then on it can
read only the Python installation and the functions folder, cannot write or execute any file,
cannot open TCP connections or signal processes outside its sandbox (on Landlock ABI 4 and 6),
and cannot regain privileges. Landlock (Linux 5.13 and newer) does this without root. A worker
of a gateway that runs as root also drops every capability. Where the kernel lacks Landlock,
``confine`` reports that, and a root worker becomes the user nobody instead, because only
another user keeps a mode 0600 key file away from it.

This module uses the standard library only, because the worker imports it before anything else.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sysconfig
from dataclasses import dataclass

# Linux system call numbers of Landlock; the same on every architecture (include/uapi/asm-generic).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights (linux/landlock.h) and the ABI version that introduced each group.
_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_RIGHTS = 0b11  # bind and connect on TCP, from ABI 4
_SCOPES = 0b11  # abstract UNIX sockets and signals of processes outside the sandbox, from ABI 6
_NOBODY_ID = 65534


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True, slots=True)
class Confinement:
    """The restrictions that ``confine`` applied, reported to the gateway, which logs them."""

    landlock_abi: int
    """The Landlock ABI version in force, or 0 when the kernel has none."""
    user: int
    memory_limit: int


def confine(readable: list[str], memory_limit: int) -> Confinement:
    """Apply every restriction that this kernel and user allow; raise ``OSError`` on failure."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    abi = _landlock_abi(libc)
    # The ruleset is built while the worker may still open every path it allows.
    ruleset = _ruleset(libc, abi, readable) if abi > 0 else None

    if os.geteuid() == 0:
        if ruleset is not None:
            # Landlock keeps files away; dropping every capability keeps root from raw
            # sockets, other processes and the rest of what root may do beyond files.
            _drop_capabilities(libc)
        else:
            # Without Landlock only another user keeps the key file (mode 0600) away.
            os.setgroups([])
            os.setgid(_NOBODY_ID)
            os.setuid(_NOBODY_ID)

    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if ruleset is not None:
        try:
            if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
                raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        finally:
            os.close(ruleset)
    return Confinement(abi, os.geteuid(), memory_limit)


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def python_paths() -> list[str]:
    """Return the folders of the Python installation that a function may import from."""
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = sysconfig.get_paths()
    found = {os.path.realpath(paths[name]) for name in names if name in paths}
    found.add("/usr/share/zoneinfo")
    return sorted(path for path in found if os.path.isdir(path))


def _landlock_abi(libc: ctypes.CDLL) -> int:
    abi = int(libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    return max(abi, 0)


def _ruleset(libc: ctypes.CDLL, abi: int, readable: list[str]) -> int:
    """Return a Landlock ruleset that allows reading ``readable`` and nothing else."""
    fs_rights = _FS_RIGHTS_BY_ABI[max(version for version in _FS_RIGHTS_BY_ABI if version <= abi)]
    attr = _RulesetAttr(fs_rights, _NET_RIGHTS if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    # The structure grew with the ABI; the kernel reads only the fields of the size given.
    size = 8
    if abi >= 4:
        size = 16
    if abi >= 6:
        size = 24
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in readable:
            _allow(libc, ruleset, path, _READ_FILE | _READ_DIR)
        _allow(libc, ruleset, "/dev/null", _READ_FILE | _WRITE_FILE)
    except OSError:
        os.close(ruleset)
        raise
    return ruleset


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _READ_FILE | _WRITE_FILE | _EXECUTE
        rule = _PathBeneathAttr(rights, descriptor)
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(descriptor)
