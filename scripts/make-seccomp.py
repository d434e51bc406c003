"""Write sandbox/seccomp.json, the seccomp profile of dsw's sandbox containers.

    python scripts/make-seccomp.py           # (re)write sandbox/seccomp.json
    python scripts/make-seccomp.py --check   # exit 1 if sandbox/seccomp.json is not current

The profile is an allowlist in the format the Docker 20.10 daemon reads (`defaultAction`,
`archMap`, `syscalls` with `names`/`action`/`errnoRet`/`args`/`comment`). It allows what Docker
20.10's built-in default profile allows a container without capabilities (dsw's sandboxes run
with CapDrop ALL, no-new-privileges and uid 10001), minus the syscalls in REMOVED below.

Differences from Docker's default, besides REMOVED:
- No rule depends on the container's capabilities: the syscalls the default allows only with a
  capability (mount, bpf, setns, ptrace with CAP_SYS_PTRACE, ...) stay blocked whatever the
  capabilities, so adding one by mistake does not widen the filter.
- Native system calls only: the x86_64 filter no longer also accepts the 32-bit (ia32, `int 0x80`)
  and x32 calling conventions, nor the aarch64 filter 32-bit ARM ones. The sandboxes run 64-bit
  code only; a 32-bit system call now kills the calling thread (the daemon's "bad architecture"
  action). See the docs text for why.
- socket() and socketpair() only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK.
- Only the rules of x86_64 and aarch64 hosts (the 32-bit and s390/ppc/mips rules are left out).

Docker 20.10 ignores `defaultErrnoRet` (it came with 22.06), so it is not written: a syscall not
listed fails with EPERM, the daemon's (runc's) default for SCMP_ACT_ERRNO.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROFILE = Path(__file__).resolve().parent.parent / "sandbox" / "seccomp.json"

# Allowed without conditions, grouped by what they are for. Together with the argument-filtered
# rules below this is Docker 20.10's default allowlist for a container without capabilities,
# minus REMOVED. Names that do not exist on the host's architecture (the *32, *_time64 and other
# 32-bit-only names) are skipped by the daemon; they are kept so the list stays comparable.
ALLOWED: list[tuple[str, list[str]]] = [
    (
        "processes and threads",
        [
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "fork",
            "vfork",
            "wait4",
            "waitid",
            "waitpid",
            "set_tid_address",
            "set_robust_list",
            "get_robust_list",
            "futex",
            "futex_time64",
            "futex_waitv",
            "rseq",
            "restart_syscall",
            "membarrier",
            "gettid",
            "getpid",
            "getppid",
            "getpgid",
            "getpgrp",
            "getsid",
            "setpgid",
            "setsid",
            "prctl",
            "arch_prctl",
            "get_thread_area",
            "set_thread_area",
            "capget",
            "capset",
            "seccomp",
            "landlock_add_rule",
            "landlock_create_ruleset",
            "landlock_restrict_self",
            "kill",
            "tkill",
            "tgkill",
            "pidfd_open",
            "pidfd_send_signal",
            "process_mrelease",
        ],
    ),
    (
        "user and group ids (changing them needs CAP_SETUID/CAP_SETGID, which the sandbox lacks)",
        [
            "getuid",
            "getuid32",
            "geteuid",
            "geteuid32",
            "getgid",
            "getgid32",
            "getegid",
            "getegid32",
            "getresuid",
            "getresuid32",
            "getresgid",
            "getresgid32",
            "getgroups",
            "getgroups32",
            "setuid",
            "setuid32",
            "setgid",
            "setgid32",
            "setreuid",
            "setreuid32",
            "setregid",
            "setregid32",
            "setresuid",
            "setresuid32",
            "setresgid",
            "setresgid32",
            "setfsuid",
            "setfsuid32",
            "setfsgid",
            "setfsgid32",
            "setgroups",
            "setgroups32",
        ],
    ),
    (
        "signals",
        [
            "rt_sigaction",
            "rt_sigpending",
            "rt_sigprocmask",
            "rt_sigqueueinfo",
            "rt_sigreturn",
            "rt_sigsuspend",
            "rt_sigtimedwait",
            "rt_sigtimedwait_time64",
            "rt_tgsigqueueinfo",
            "sigaltstack",
            "sigprocmask",
            "sigreturn",
            "signalfd",
            "signalfd4",
            "pause",
            "alarm",
        ],
    ),
    (
        "clocks, sleeps and timers (setting the clock needs CAP_SYS_TIME)",
        [
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
            "clock_getres",
            "clock_getres_time64",
            "clock_gettime",
            "clock_gettime64",
            "clock_nanosleep",
            "clock_nanosleep_time64",
            "nanosleep",
            "gettimeofday",
            "time",
            "times",
            "getitimer",
            "setitimer",
            "timer_create",
            "timer_delete",
            "timer_getoverrun",
            "timer_gettime",
            "timer_gettime64",
            "timer_settime",
            "timer_settime64",
            "timerfd_create",
            "timerfd_gettime",
            "timerfd_gettime64",
            "timerfd_settime",
            "timerfd_settime64",
        ],
    ),
    (
        "scheduling, priorities, limits and system information",
        [
            "sched_getaffinity",
            "sched_setaffinity",
            "sched_getattr",
            "sched_setattr",
            "sched_getparam",
            "sched_setparam",
            "sched_getscheduler",
            "sched_setscheduler",
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_rr_get_interval",
            "sched_rr_get_interval_time64",
            "sched_yield",
            "getpriority",
            "setpriority",
            "ioprio_get",
            "ioprio_set",
            "getrlimit",
            "setrlimit",
            "ugetrlimit",
            "prlimit64",
            "getrusage",
            "sysinfo",
            "uname",
            "getcpu",
            "getrandom",
            "umask",
        ],
    ),
    (
        "memory",
        [
            "brk",
            "mmap",
            "mmap2",
            "munmap",
            "mremap",
            "mprotect",
            "madvise",
            "mincore",
            "msync",
            "mlock",
            "mlock2",
            "mlockall",
            "munlock",
            "munlockall",
            "remap_file_pages",
            "memfd_create",
            "memfd_secret",
        ],
    ),
    (
        "files and directories",
        [
            "open",
            "openat",
            "openat2",
            "creat",
            "close",
            "close_range",
            "dup",
            "dup2",
            "dup3",
            "fcntl",
            "fcntl64",
            "flock",
            "access",
            "faccessat",
            "faccessat2",
            "chdir",
            "fchdir",
            "getcwd",
            "chmod",
            "fchmod",
            "fchmodat",
            "chown",
            "chown32",
            "fchown",
            "fchown32",
            "fchownat",
            "lchown",
            "lchown32",
            "link",
            "linkat",
            "symlink",
            "symlinkat",
            "unlink",
            "unlinkat",
            "rename",
            "renameat",
            "renameat2",
            "mkdir",
            "mkdirat",
            "rmdir",
            "mknod",
            "mknodat",
            "readlink",
            "readlinkat",
            "stat",
            "stat64",
            "lstat",
            "lstat64",
            "fstat",
            "fstat64",
            "fstatat64",
            "newfstatat",
            "statx",
            "statfs",
            "statfs64",
            "fstatfs",
            "fstatfs64",
            "getdents",
            "getdents64",
            "truncate",
            "truncate64",
            "ftruncate",
            "ftruncate64",
            "fallocate",
            "fadvise64",
            "fadvise64_64",
            "readahead",
            "utime",
            "utimes",
            "utimensat",
            "utimensat_time64",
            "futimesat",
            "sync",
            "syncfs",
            "fsync",
            "fdatasync",
            "sync_file_range",
            "inotify_init",
            "inotify_init1",
            "inotify_add_watch",
            "inotify_rm_watch",
            # Useless without fanotify_init, which needs CAP_SYS_ADMIN; kept as in Docker's.
            "fanotify_mark",
        ],
    ),
    (
        "extended attributes",
        [
            "getxattr",
            "lgetxattr",
            "fgetxattr",
            "setxattr",
            "lsetxattr",
            "fsetxattr",
            "listxattr",
            "llistxattr",
            "flistxattr",
            "removexattr",
            "lremovexattr",
            "fremovexattr",
        ],
    ),
    (
        "reading and writing",
        [
            "read",
            "readv",
            "pread64",
            "preadv",
            "preadv2",
            "write",
            "writev",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "lseek",
            "_llseek",
            "sendfile",
            "sendfile64",
            "copy_file_range",
            "splice",
            "tee",
            "pipe",
            "pipe2",
            "ioctl",
        ],
    ),
    (
        "waiting for descriptors and events",
        [
            "poll",
            "ppoll",
            "ppoll_time64",
            "select",
            "_newselect",
            "pselect6",
            "pselect6_time64",
            "epoll_create",
            "epoll_create1",
            "epoll_ctl",
            "epoll_ctl_old",
            "epoll_wait",
            "epoll_wait_old",
            "epoll_pwait",
            "epoll_pwait2",
            "eventfd",
            "eventfd2",
        ],
    ),
    (
        "Linux native AIO (io_submit and friends; io_uring is removed, see REMOVED)",
        [
            "io_setup",
            "io_destroy",
            "io_submit",
            "io_cancel",
            "io_getevents",
            "io_pgetevents",
            "io_pgetevents_time64",
        ],
    ),
    (
        "System V and POSIX IPC (private to the container's IPC namespace)",
        [
            "ipc",
            "msgget",
            "msgctl",
            "msgsnd",
            "msgrcv",
            "semget",
            "semctl",
            "semop",
            "semtimedop",
            "semtimedop_time64",
            "shmget",
            "shmctl",
            "shmat",
            "shmdt",
            "mq_open",
            "mq_unlink",
            "mq_getsetattr",
            "mq_notify",
            "mq_timedsend",
            "mq_timedsend_time64",
            "mq_timedreceive",
            "mq_timedreceive_time64",
        ],
    ),
    (
        "sockets (socket and socketpair: only the families in SOCKET_FAMILIES, rules below)",
        [
            "bind",
            "connect",
            "listen",
            "accept",
            "accept4",
            "getsockname",
            "getpeername",
            "getsockopt",
            "setsockopt",
            "send",
            "sendto",
            "sendmsg",
            "sendmmsg",
            "recv",
            "recvfrom",
            "recvmsg",
            "recvmmsg",
            "recvmmsg_time64",
            "shutdown",
        ],
    ),
]

# What Docker 20.10's default allows a container without capabilities and this profile does not.
REMOVED: dict[str, str] = {
    "io_uring_setup": "io_uring: a large, fast-moving kernel interface with a long run of "
    "privilege-escalation bugs; Docker 25+ blocks it by default; no script needs it",
    "io_uring_enter": "io_uring, as io_uring_setup",
    "io_uring_register": "io_uring, as io_uring_setup",
    "ptrace": "lets a script stop and rewrite any process of its uid, PID 1 (docker-init) "
    "included, which then never lets the container exit; debuggers only",
    "vmsplice": "page-gifting into pipes; a history of kernel memory bugs (CVE-2008-0600 and "
    "others); no ordinary program uses it",
    "modify_ldt": "16-bit segment tables for Wine/DOSEMU; a history of x86 kernel bugs; "
    "64-bit runtimes never call it",
    "socketcall": "the 32-bit socket multiplexer: does not exist on x86_64/aarch64, and where "
    "it does its arguments cannot be filtered, so it would bypass the socket family rules",
}

# Kept blocked (not in the allowlist): Docker's default allows these only with a capability the
# sandbox has not got, or not at all. Documentation, and checked not to be allowed.
STILL_BLOCKED: dict[str, str] = {
    "process_vm_readv": "CAP_SYS_PTRACE in Docker's default",
    "process_vm_writev": "CAP_SYS_PTRACE in Docker's default",
    "kcmp": "CAP_SYS_PTRACE in Docker's default",
    "pidfd_getfd": "CAP_SYS_PTRACE in Docker's default",
    "process_madvise": "CAP_SYS_PTRACE in Docker's default",
    "userfaultfd": "not in Docker's default",
    "perf_event_open": "CAP_SYS_ADMIN in Docker's default",
    "bpf": "CAP_SYS_ADMIN in Docker's default",
    "add_key": "not in Docker's default (the keyring is not namespaced)",
    "keyctl": "not in Docker's default",
    "request_key": "not in Docker's default",
    "mbind": "CAP_SYS_NICE in Docker's default",
    "set_mempolicy": "CAP_SYS_NICE in Docker's default",
    "get_mempolicy": "CAP_SYS_NICE in Docker's default",
    "migrate_pages": "not in Docker's default",
    "move_pages": "not in Docker's default",
    "name_to_handle_at": "CAP_SYS_ADMIN in Docker 20.10's default",
    "open_by_handle_at": "CAP_DAC_READ_SEARCH in Docker's default",
    "setns": "CAP_SYS_ADMIN in Docker's default",
    "unshare": "CAP_SYS_ADMIN in Docker's default",
    "syslog": "CAP_SYS_ADMIN or CAP_SYSLOG in Docker's default",
    "acct": "CAP_SYS_PACCT in Docker's default",
    "quotactl": "CAP_SYS_ADMIN in Docker's default",
    "mount": "CAP_SYS_ADMIN in Docker's default",
    "umount2": "CAP_SYS_ADMIN in Docker's default",
    "pivot_root": "not in Docker's default",
    "chroot": "CAP_SYS_CHROOT in Docker's default",
    "clone3": "answered ENOSYS (rule below), so glibc falls back to clone",
}

# clone() is allowed without the flags that create namespaces, as in Docker's default.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# personality(): only the values Docker's default allows.
PERSONALITIES = {
    "PER_LINUX": 0x0,
    "PER_LINUX32": 0x8,
    "UNAME26": 0x20000,
    "PER_LINUX32|UNAME26": 0x20008,
    "query (0xffffffff)": 0xFFFFFFFF,
}

# socket() and socketpair(): the address families a script (or the dotnet SDK restoring NuGet
# packages) needs. Every other family, AF_VSOCK above all, fails with EPERM.
SOCKET_FAMILIES = {
    "AF_UNIX": 1,
    "AF_INET": 2,
    "AF_INET6": 10,
    "AF_NETLINK": 16,
}

ENOSYS = 38

# Native architectures only: no 32-bit sub-architectures (see the module docstring).
ARCH_MAP = [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []},
]


def _arg_rules(name: str, values: dict[str, int], index: int = 0) -> list[dict[str, object]]:
    """One allow rule per allowed value of argument `index` (seccomp rules AND their args)."""
    return [
        {
            "names": [name],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": index, "value": value, "op": "SCMP_CMP_EQ"}],
            "comment": f"{name}({label})",
        }
        for label, value in values.items()
    ]


def profile() -> dict[str, object]:
    allowed = [name for _, names in ALLOWED for name in names]
    duplicates = sorted({n for n in allowed if allowed.count(n) > 1})
    if duplicates:
        raise SystemExit(f"listed twice: {duplicates}")
    conflicting = sorted(set(allowed) & (set(REMOVED) | set(STILL_BLOCKED)))
    if conflicting:
        raise SystemExit(f"both allowed and blocked: {conflicting}")

    mask = 0
    for flag in CLONE_NAMESPACE_FLAGS.values():
        mask |= flag
    syscalls: list[dict[str, object]] = [
        {"names": names, "action": "SCMP_ACT_ALLOW", "comment": comment}
        for comment, names in ALLOWED
    ]
    syscalls.append(
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            "comment": "clone() without " + "|".join(CLONE_NAMESPACE_FLAGS),
        }
    )
    syscalls.append(
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
            "comment": "clone3() cannot be filtered by flags: ENOSYS makes glibc use clone()",
        }
    )
    syscalls += _arg_rules("personality", PERSONALITIES)
    syscalls += _arg_rules("socket", SOCKET_FAMILIES)
    syscalls += _arg_rules("socketpair", SOCKET_FAMILIES)
    return {"defaultAction": "SCMP_ACT_ERRNO", "archMap": ARCH_MAP, "syscalls": syscalls}


def render() -> str:
    return json.dumps(profile(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if not PROFILE.exists() or PROFILE.read_text() != text:
            print(f"{PROFILE} is not current: run scripts/make-seccomp.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 64
    PROFILE.write_text(text)
    print(f"wrote {PROFILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
