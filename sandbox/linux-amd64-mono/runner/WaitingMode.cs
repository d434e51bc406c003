// The warm pool's waiting mode: all the work that needs no job, then the release, then the job.

using System;
using System.IO;
using System.Runtime.InteropServices;

namespace Dsw
{
    // `csx-runner.exe --wait-for-release /tmp/script/main.csx`: loads, warms the compiler
    // up on a throwaway script and prepares the job's evaluator, all silently; then takes
    // the release from standard input (the worker's control channel), as dsw-entry does:
    // one line `dsw-job NAME=SIZE...`, then each file's SIZE bytes, into /tmp/script. Then
    // it says `NUL dsw-released NUL LF` on stdout and on stderr, takes /tmp/script/stdin
    // (or nothing) as its standard input and runs the script as the normal mode does. At
    // the end of the control channel before a whole line it exits 0 and says nothing.
    static class WaitingMode
    {
        public const string Option = "--wait-for-release";
        const string ReleaseMarker = "\0dsw-released\0\n";
        const string ScriptDir = "/tmp/script";
        const string JobStdin = ScriptDir + "/stdin";
        const string NoInput = "/dev/null";
        const int BadRelease = 64;

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
            string line = ReadLine();
            if (line == null) return 0;
            string refused = TakeFiles(line);
            if (refused != null)
            {
                Console.Error.WriteLine("csx-runner: {0}", refused);
                return BadRelease;
            }
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

        // One line from the control channel, a byte at a time (nothing of the files is read
        // ahead); null at its end before a whole line.
        static string ReadLine()
        {
            var line = new MemoryStream();
            var one = new byte[1];
            while (true)
            {
                long n = read(0, one, (UIntPtr)1).ToInt64();
                if (n == 1 && one[0] == (byte)'\n') return System.Text.Encoding.ASCII.GetString(line.ToArray());
                if (n == 1) line.WriteByte(one[0]);
                else if (n == 0 || Marshal.GetLastWin32Error() != EINTR) return null;
            }
        }

        // The job's files, as the release line lists them; null when all are in place, else why not.
        static string TakeFiles(string line)
        {
            string[] words = line.Split(' ');
            if (words[0] != "dsw-job") return "not a release: " + words[0];
            if (mkdir(ScriptDir, 0x1C0 /* 0700 */) != 0) return "cannot make " + ScriptDir;
            var chunk = new byte[64 * 1024];
            for (int i = 1; i < words.Length; i++)
            {
                string[] file = words[i].Split(new[] { '=' }, 2);
                long size;
                if (file.Length != 2 || file[0] == "" || file[0].StartsWith(".") || file[0].Contains("/")
                    || !long.TryParse(file[1], System.Globalization.NumberStyles.None, null, out size))
                    return "bad file " + words[i];
                using (var output = new FileStream(Path.Combine(ScriptDir, file[0]), FileMode.CreateNew))
                {
                    while (size > 0)
                    {
                        long n = read(0, chunk, (UIntPtr)Math.Min(size, chunk.Length)).ToInt64();
                        if (n == 0 || (n < 0 && Marshal.GetLastWin32Error() != EINTR))
                            return "the release ended inside " + file[0];
                        if (n < 0) continue;
                        output.Write(chunk, 0, (int)n);
                        size -= n;
                    }
                }
            }
            return null;
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
        static extern int mkdir(string path, uint mode);

        [DllImport("libc", SetLastError = true)]
        static extern int dup2(int from, int to);

        [DllImport("libc", SetLastError = true)]
        static extern int close(int fd);
    }
}
