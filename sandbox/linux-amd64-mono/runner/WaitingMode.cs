// The warm pool's waiting mode: all the work that needs no job, then the release, then the job.

using System;
using System.IO;
using System.Runtime.InteropServices;

namespace Dsw
{
    // `csx-runner.exe --wait-for-release /tmp/script/main.csx`: loads, warms the compiler
    // up on a throwaway script and prepares the job's evaluator, all silently; then reads
    // one line from standard input (the worker's control channel). Then it says
    // `NUL dsw-released NUL LF` on stdout and on stderr, takes /tmp/script/stdin (or
    // nothing) as its standard input and runs the script as the normal mode does. At
    // the end of the control channel before a line it exits 0 and says nothing.
    static class WaitingMode
    {
        public const string Option = "--wait-for-release";
        const string ReleaseMarker = "\0dsw-released\0\n";
        const string JobStdin = "/tmp/script/stdin";
        const string NoInput = "/dev/null";

        // Declarations, a method, LINQ, await and an exception report: the compiler's and
        // the runner's paths a script takes, compiled once before the job comes.
        const string WarmUpScript = @"using System.Text;
class DswWarmUp { public int Twice(int v) { return v * 2; } }
int Sum(IEnumerable<int> values) { return values.Sum(); }
var warm = new List<int> { 1, 2, 3 }.Select(v => new DswWarmUp().Twice(v)).ToList();
await Task.Yield();
if (Sum(warm) > 0) throw new InvalidOperationException(new StringBuilder(""x"").ToString());
";

        public static int Run(string path)
        {
            string fileName = Path.GetFileName(path);
            WarmUp(fileName);
            ScriptCompiler prepared = Prepare(fileName);
            if (!WaitForRelease()) return 0;
            SayReleased();
            if (!TakeJobInput()) return 1;
            // Not prepared (its errors went before the release): the normal mode's own, then.
            return Program.RunFile(path, prepared);
        }

        // Compiles and runs the throwaway script on an evaluator of its own, so the job's
        // evaluator holds nothing of it; whatever it does is neither shown nor kept.
        static void WarmUp(string fileName)
        {
            try
            {
                var script = new CsxScript(fileName, WarmUpScript);
                var compiler = new ScriptCompiler(fileName, TextWriter.Null);
                if (!compiler.Prepare()) return;
                var statements = compiler.Compile(script);
                if (statements == null) return;
                try
                {
                    foreach (var statement in statements) Program.RunStatement(statement);
                }
                catch (Exception e)
                {
                    StackTraces.Describe(e, compiler.Lines, fileName);
                }
            }
            catch (Exception)
            {
                // A warm-up that fails only leaves more to compile after the release.
            }
        }

        static ScriptCompiler Prepare(string fileName)
        {
            try
            {
                return Program.PrepareCompiler(fileName);
            }
            catch (Exception)
            {
                return null;
            }
        }

        // True once a whole line has come; false at the end of the input before one.
        static bool WaitForRelease()
        {
            var one = new byte[1];
            while (true)
            {
                long n = read(0, one, (UIntPtr)1).ToInt64();
                if (n == 1 && one[0] == (byte)'\n') return true;
                if (n == 0) return false;
                if (n < 0 && Marshal.GetLastWin32Error() != EINTR) return false;
            }
        }

        static void SayReleased()
        {
            Console.Out.Write(ReleaseMarker);
            Console.Error.Write(ReleaseMarker);
        }

        // The job's stdin becomes file descriptor 0, as dsw-entry gives it in the normal
        // mode: the control channel is closed, so the script can neither read nor hold it.
        static bool TakeJobInput()
        {
            string input = File.Exists(JobStdin) ? JobStdin : NoInput;
            int fd = open(input, O_RDONLY);
            if (fd < 0 || dup2(fd, 0) < 0)
            {
                Console.Error.WriteLine("error: cannot read {0}: errno {1}", input, Marshal.GetLastWin32Error());
                return false;
            }
            if (fd != 0) close(fd);
            Program.SetUpInput();
            return true;
        }

        const int O_RDONLY = 0;
        const int EINTR = 4;

        [DllImport("libc", SetLastError = true)]
        static extern IntPtr read(int fd, byte[] buffer, UIntPtr count);

        [DllImport("libc", SetLastError = true)]
        static extern int open(string path, int flags);

        [DllImport("libc", SetLastError = true)]
        static extern int dup2(int from, int to);

        [DllImport("libc", SetLastError = true)]
        static extern int close(int fd);
    }
}
