# seccomp-probe.sh: tries, in the shell sandbox, each system call that dsw's seccomp
# profile (sandbox/seccomp.json) blocks, through perl's syscall() (perl-base is in the
# image), and prints one line per probe: `<name> <result>`, the result being OK when the
# call succeeded or the errno's name (EPERM, ENOSYS, EBADF, ...) when it failed.
# x86_64 only (raw syscall numbers). Exit code 0 whatever the results.
#
# Each call is made with arguments that a kernel which receives it answers with success
# or an errno other than EPERM where possible, so EPERM means the seccomp filter
# stopped it. Expected under sandbox/seccomp.json: EPERM on every line, except
# clone3 ENOSYS (so glibc falls back to clone) and the control lines at the end
# (socket:AF_UNIX, socket:AF_INET, personality:query and getpid OK). Under Docker 20.10's
# default profile the three io_uring calls, ptrace, vmsplice, modify_ldt, socket:AF_VSOCK,
# socket:AF_ALG and socketpair:AF_TIPC reach the kernel (OK or another errno); the rest are
# blocked by that profile too (most of them because the sandbox has no capabilities).
# ptrace attaches to a child of the probe only (never to PID 1) and detaches again.
exec perl -e '
use strict;
use warnings;
use Errno ();
use POSIX ();

$| = 1;
my %name_of = map { my $v = eval { Errno->can($_)->() }; defined $v ? ($v => $_) : () }
    grep { /^E[A-Z0-9]+$/ } keys %Errno::;
# Aliases that share a number with a better-known name.
$name_of{Errno::EAGAIN()} = "EAGAIN";
$name_of{Errno::EOPNOTSUPP()} = "EOPNOTSUPP";
$name_of{Errno::EDEADLK()} = "EDEADLK";

sub report {
    my ($name, $ret, $errno) = @_;
    my $result = $ret == -1 ? ($name_of{$errno + 0} // "errno" . ($errno + 0)) : "OK";
    print "$name $result\n";
}

# One raw system call; closes a descriptor it returned.
sub probe {
    my ($name, $nr, @args) = @_;
    local $! = 0;
    my $ret = syscall($nr, @args);
    my $errno = $! + 0;
    POSIX::close($ret) if $ret > 2 && $name =~ /^(io_uring_setup|userfaultfd|socket)/;
    report($name, $ret, $errno);
}

my $buf = "\0" x 4096;    # a writable zeroed buffer wherever a pointer is wanted
my $pid = $$ + 0;

# io_uring: a real ring (4 entries, zeroed io_uring_params) and calls on a bad descriptor.
my $params = "\0" x 120;
probe("io_uring_setup", 425, 4, $params);
probe("io_uring_enter", 426, -1, 0, 0, 0, 0, 0);
probe("io_uring_register", 427, -1, 0, 0, 0);

# ptrace: attach to a child of ours, then detach and end it.
{
    my $child = fork();
    die "fork: $!" unless defined $child;
    if ($child == 0) { sleep 30; POSIX::_exit(0); }
    local $! = 0;
    my $ret = syscall(101, 16, $child + 0, 0, 0);    # PTRACE_ATTACH
    my $errno = $! + 0;
    if ($ret == 0) {
        waitpid($child, 0);
        syscall(101, 17, $child + 0, 0, 0);          # PTRACE_DETACH
    }
    kill "KILL", $child;
    waitpid($child, 0);
    report("ptrace", $ret, $errno);
}
probe("process_vm_readv", 310, $pid, 0, 0, 0, 0, 0);
probe("process_vm_writev", 311, $pid, 0, 0, 0, 0, 0);
probe("kcmp", 312, $pid, $pid, 1, 0, 0);              # KCMP_VM of ourselves: 0
probe("pidfd_getfd", 438, -1, 0, 0);
probe("process_madvise", 440, -1, 0, 0, 0, 0);

probe("vmsplice", 278, -1, 0, 0, 0);
probe("modify_ldt", 154, 0, $buf, 16);                # read the (empty) LDT
probe("socket:AF_VSOCK", 41, 40, 1, 0);
probe("socket:AF_ALG", 41, 38, 5, 0);
probe("socket:AF_PACKET", 41, 17, 2, 0);
probe("socketpair:AF_TIPC", 53, 30, 5, 0, $buf);

probe("userfaultfd", 323, 0x80001);                   # O_CLOEXEC|UFFD_USER_MODE_ONLY
probe("perf_event_open", 298, 0, 0, -1, -1, 0);
probe("bpf", 321, 0, 0, 0);
probe("add_key", 248, 0, 0, 0, 0, 0);
probe("request_key", 249, 0, 0, 0, 0);
probe("keyctl", 250, 0, -1, 0);                       # KEYCTL_GET_KEYRING_ID, thread keyring
{
    probe("personality:ADDR_NO_RANDOMIZE", 135, 0x0040000);
    syscall(135, 0);
}
probe("clone3", 435, 0, 0);
probe("mbind", 237, 0, 0, 0, 0, 0, 0);
probe("set_mempolicy", 238, 0, 0, 0);
probe("get_mempolicy", 239, 0, 0, 0, 0, 0);
probe("migrate_pages", 256, 0, 0, 0, 0);
probe("move_pages", 279, 0, 0, 0, 0, 0, 0);
probe("name_to_handle_at", 303, -1, 0, 0, 0, 0);
probe("open_by_handle_at", 304, -1, 0, 0);
probe("setns", 308, -1, 0);
probe("unshare", 272, 0);                             # no flags: a no-op when allowed
probe("syslog", 103, 10, 0, 0);                       # SYSLOG_ACTION_SIZE_BUFFER
probe("acct", 163, 0);
probe("quotactl", 179, 0, 0, 0, 0);
probe("mount", 165, 0, 0, 0, 0, 0);
probe("umount2", 166, 0, 0);
probe("pivot_root", 155, 0, 0);
probe("chroot", 161, 0);
probe("fsopen", 430, 0, 0);

# Controls: allowed under both profiles.
probe("socket:AF_UNIX", 41, 1, 1, 0);
probe("socket:AF_INET", 41, 2, 2, 0);
probe("personality:query", 135, 0xffffffff);
probe("getpid", 39);
'
