// seccomp-probe.csx: tries, in a C# sandbox, the system calls that dsw's seccomp profile
// (sandbox/seccomp.json) removes from Docker's default, through libc's syscall() (DllImport),
// and prints one line per probe: `<name> <result>`, the result being OK when the call
// succeeded or the errno's name when it failed. x86_64 Linux only (raw syscall numbers).
//
// Expected under sandbox/seccomp.json: EPERM on every line but clone3 (ENOSYS), ia32:getpid
// (KILLED: the profile accepts native 64-bit system calls only, so a 32-bit `int 0x80` call
// kills the calling thread) and the controls at the end (OK). Under Docker 20.10's default
// profile the io_uring calls, ptrace, vmsplice, modify_ldt, socket:AF_VSOCK, socket:AF_ALG and
// ia32:getpid reach the kernel (OK or another errno); the rest are blocked by it too.
//
// ia32:getpid runs in a child process (this script again, with the argument `ia32`) so that
// a killed thread cannot take the probe with it. ptrace attaches to a child of the probe only.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;

if (Args.Count > 0 && Args[0] == "ia32")
{
    Probe.Ia32Child();
}

var self = Probe.Syscall(39);
var page = Marshal.AllocHGlobal(4096);
for (var i = 0; i < 4096; i++)
{
    Marshal.WriteByte(page, i, 0);
}

var ring = Probe.Run("io_uring_setup", 425, 4, (long)page);
Probe.Close(ring);
Probe.Run("io_uring_enter", 426, -1, 0, 0, 0, 0, 0);
Probe.Run("io_uring_register", 427, -1, 0, 0, 0);
Probe.Ptrace();
Probe.Run("process_vm_readv", 310, self, 0, 0, 0, 0, 0);
Probe.Run("process_vm_writev", 311, self, 0, 0, 0, 0, 0);
Probe.Run("vmsplice", 278, -1, 0, 0, 0);
Probe.Run("modify_ldt", 154, 0, (long)page, 16);
Probe.Close(Probe.Run("socket:AF_VSOCK", 41, 40, 1, 0));
Probe.Close(Probe.Run("socket:AF_ALG", 41, 38, 5, 0));
Probe.Close(Probe.Run("userfaultfd", 323, 0x80001));
Probe.Run("kcmp", 312, self, self, 1, 0, 0);
Probe.Run("pidfd_getfd", 438, -1, 0, 0);
Probe.Run("perf_event_open", 298, 0, 0, -1, -1, 0);
Probe.Run("bpf", 321, 0, 0, 0);
Probe.Run("keyctl", 250, 0, -1, 0);
Probe.Run("unshare", 272, 0);
Probe.Run("setns", 308, -1, 0);
Probe.Run("clone3", 435, 0, 0);
Probe.Ia32();
Probe.Close(Probe.Run("socket:AF_UNIX", 41, 1, 1, 0));
Probe.Close(Probe.Run("socket:AF_INET", 41, 2, 2, 0));
Probe.Run("getpid", 39);

public static class Probe
{
    [DllImport("libc", EntryPoint = "syscall", SetLastError = true)]
    static extern long syscall6(long number, long a, long b, long c, long d, long e, long f);

    [DllImport("libc", EntryPoint = "close")]
    static extern int close(int fd);

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    static extern IntPtr mmap(IntPtr addr, UIntPtr length, int prot, int flags, int fd, IntPtr offset);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate int NativeInt();

    static readonly Dictionary<int, string> Names = new Dictionary<int, string>
    {
        { 1, "EPERM" }, { 2, "ENOENT" }, { 3, "ESRCH" }, { 4, "EINTR" }, { 9, "EBADF" },
        { 11, "EAGAIN" }, { 12, "ENOMEM" }, { 13, "EACCES" }, { 14, "EFAULT" }, { 16, "EBUSY" },
        { 19, "ENODEV" }, { 22, "EINVAL" }, { 24, "EMFILE" }, { 38, "ENOSYS" },
        { 93, "EPROTONOSUPPORT" }, { 94, "ESOCKTNOSUPPORT" }, { 95, "EOPNOTSUPP" },
        { 97, "EAFNOSUPPORT" }, { 126, "ENOKEY" },
    };

    public static long Syscall(long number, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0)
    {
        return syscall6(number, a, b, c, d, e, f);
    }

    static void Report(string name, long result, int errno)
    {
        string text;
        if (result != -1)
        {
            text = "OK";
        }
        else if (!Names.TryGetValue(errno, out text))
        {
            text = "errno" + errno;
        }
        Console.WriteLine(name + " " + text);
    }

    public static long Run(string name, long number, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0)
    {
        var result = syscall6(number, a, b, c, d, e, f);
        Report(name, result, result == -1 ? Marshal.GetLastWin32Error() : 0);
        return result;
    }

    public static void Close(long fd)
    {
        if (fd > 2)
        {
            close((int)fd);
        }
    }

    // PTRACE_ATTACH to a child of ours (sleep), then PTRACE_DETACH and kill it.
    public static void Ptrace()
    {
        var child = Process.Start(new ProcessStartInfo("/bin/sleep", "30") { UseShellExecute = false });
        var result = syscall6(101, 16, child.Id, 0, 0, 0, 0);
        var errno = result == -1 ? Marshal.GetLastWin32Error() : 0;
        if (result == 0)
        {
            Thread.Sleep(100);
            syscall6(101, 17, child.Id, 0, 0, 0, 0);
        }
        child.Kill();
        child.WaitForExit();
        Report("ptrace", result, errno);
    }

    // getpid through the 32-bit system call entry (int 0x80, eax = 20), in a child process.
    // The script is /tmp/script/main.csx, run by the mono type's runner or by dotnet-script.
    public static void Ia32()
    {
        var info = File.Exists("/opt/dsw/csx-runner.exe")
            ? new ProcessStartInfo("mono", "/opt/dsw/csx-runner.exe /tmp/script/main.csx ia32")
            : new ProcessStartInfo("dotnet-script", "/tmp/script/main.csx -c release -- ia32");
        info.UseShellExecute = false;
        info.RedirectStandardOutput = true;
        Process child;
        try
        {
            child = Process.Start(info);
        }
        catch (Exception e)
        {
            Console.WriteLine("ia32:getpid SKIPPED");
            Console.Error.WriteLine("ia32:getpid: cannot start " + info.FileName + ": " + e.Message);
            return;
        }
        var output = child.StandardOutput.ReadToEndAsync();
        var line = "ia32:getpid KILLED";
        if (!child.WaitForExit(60000))
        {
            child.Kill();
            line = "ia32:getpid TIMEOUT";
        }
        else
        {
            foreach (var l in output.Result.Split('\n'))
            {
                if (l.StartsWith("ia32:getpid "))
                {
                    line = l.Trim();
                }
            }
        }
        Console.WriteLine(line);
    }

    // The child: runs the 32-bit call on a thread of its own; a seccomp kill ends only that
    // thread, so the main thread reports it and ends the process at once (SIGKILL to itself).
    public static void Ia32Child()
    {
        var code = mmap(IntPtr.Zero, (UIntPtr)4096, 7, 0x22, -1, IntPtr.Zero);
        if (code == new IntPtr(-1))
        {
            Console.WriteLine("ia32:getpid mmap-failed");
            Environment.Exit(0);
        }
        // mov eax, 20 ; int 0x80 ; ret
        Marshal.Copy(new byte[] { 0xB8, 0x14, 0x00, 0x00, 0x00, 0xCD, 0x80, 0xC3 }, 0, code, 8);
        var call = (NativeInt)Marshal.GetDelegateForFunctionPointer(code, typeof(NativeInt));
        var pid = 0;
        var thread = new Thread(() => { pid = call(); });
        thread.Start();
        string text;
        if (!thread.Join(5000))
        {
            text = "KILLED";
        }
        else if (pid < 0)
        {
            string name;
            text = Names.TryGetValue(-pid, out name) ? name : "errno" + (-pid);
        }
        else
        {
            text = "OK";
        }
        Console.WriteLine("ia32:getpid " + text);
        Console.Out.Flush();
        syscall6(62, syscall6(39, 0, 0, 0, 0, 0, 0), 9, 0, 0, 0, 0);
    }
}
