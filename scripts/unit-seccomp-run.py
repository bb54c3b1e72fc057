#!/usr/bin/python3
"""Runs a command under the seccomp policy that a systemd unit file asks for, without
systemd: SystemCallFilter= (allow and deny lists, groups expanded by
`systemd-analyze syscall-filter`), SystemCallErrorNumber=, RestrictAddressFamilies= and
MemoryDenyWriteExecute=. It proves that the daemon works inside its unit's sandbox on a
machine where systemd is not PID 1 (the end-to-end package tests use it).

    unit-seccomp-run.py UNIT -- COMMAND [ARG...]

Needs Debian's python3-seccomp (libseccomp's bindings). The filesystem and namespace
settings (ProtectSystem=, PrivateUsers=, ...) are not reproduced here.
"""

import errno
import os
import socket
import subprocess
import sys

import seccomp


def unit_settings(path):
    """[Service] settings in order, as (key, value) pairs; a bare `Key=` resets."""
    out, section = [], None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                k, v = line.split("=", 1)
                out.append((k.strip(), v.strip()))
    return out


_groups = {}


def expand(name):
    """A syscall name, or every syscall of a @group (recursively)."""
    if not name.startswith("@"):
        return {name}
    if name not in _groups:
        text = subprocess.run(
            ["systemd-analyze", "syscall-filter", name], check=True, capture_output=True, text=True
        ).stdout
        names = set()
        for line in text.splitlines()[1:]:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            names |= expand(item)
        _groups[name] = names
    return _groups[name]


def syscall_filter(settings):
    """The allowed set (None: no allow list) and the denied set, in systemd's order."""
    allow, deny = None, set()
    for k, v in settings:
        if k != "SystemCallFilter":
            continue
        if not v:
            allow, deny = None, set()
            continue
        invert = v.startswith("~")
        names = set().union(*(expand(n) for n in v.lstrip("~").split()))
        if invert:
            if allow is not None:
                allow -= names
            else:
                deny |= names
        else:
            allow = names if allow is None else allow | names
            deny -= names
    return allow, deny


def add(f, action, name, *args):
    try:
        f.add_rule(action, name, *args)
    except (RuntimeError, ValueError, OSError):
        pass  # a name this kernel or architecture does not have


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: unit-seccomp-run.py UNIT -- COMMAND [ARG...]")
    settings = unit_settings(sys.argv[1])
    last = {k: v for k, v in settings}
    err = getattr(errno, last.get("SystemCallErrorNumber", ""), None)
    refused = seccomp.ERRNO(err) if err else seccomp.KILL_PROCESS

    filters = []
    allow, deny = syscall_filter(settings)
    if allow is not None:
        f = seccomp.SyscallFilter(defaction=refused)
        for n in sorted(allow):
            add(f, seccomp.ALLOW, n)
        filters.append(f)
    if deny:
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for n in sorted(deny):
            add(f, refused, n)
        filters.append(f)

    families = last.get("RestrictAddressFamilies", "")
    if families and families != "none" and not families.startswith("~"):
        keep = {int(getattr(socket, fam)) for fam in families.split()}
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        for fam in range(0, 64):
            if fam not in keep:
                add(f, seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, fam))
        filters.append(f)

    if last.get("MemoryDenyWriteExecute") in ("yes", "true", "1", "on"):
        prot_write, prot_exec, shm_exec = 0x2, 0x4, 0o100000
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        eperm = seccomp.ERRNO(errno.EPERM)
        wx = prot_write | prot_exec
        add(f, eperm, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
        add(f, eperm, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, prot_exec, prot_exec))
        add(f, eperm, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, prot_exec, prot_exec))
        add(f, eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, shm_exec, shm_exec))
        filters.append(f)

    # The allow list goes last: once loaded it may refuse seccomp() itself. Each load
    # also sets no_new_privs, as NoNewPrivileges= would.
    for f in filters[1:] + filters[:1] if allow is not None else filters:
        f.load()
    cmd = sys.argv[3:]
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
