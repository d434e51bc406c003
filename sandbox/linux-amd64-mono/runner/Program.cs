// The runner's entry point: runs one C# script (.csx) on Mono's evaluator the way
// dotnet-script runs it on .NET; how, and what is supported, is told in
// sandbox/README.md (the mono type).

using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using System.Threading.Tasks;

namespace Dsw
{
    static class Program
    {
        public static int Main(string[] argv)
        {
            SetUpOutput();
            bool waiting = argv.Length > 0 && argv[0] == WaitingMode.Option;
            int at = waiting ? 1 : 0; // the script path
            if (argv.Length <= at || argv[at].Length == 0)
            {
                SetUpInput();
                Console.Error.WriteLine("usage: csx-runner.exe [{0}] SCRIPT.csx [--] [ARGS...]", WaitingMode.Option);
                return 64;
            }
            string path = argv[at];
            ScriptGlobals.SetArgs(ScriptArguments(argv, at + 1));
            if (waiting) return WaitingMode.Run(path);
            SetUpInput();
            return RunFile(path, null);
        }

        // Reads, loads, compiles and runs the script at path, with a compiler prepared
        // for it or, when null, one of its own made after the script has loaded.
        public static int RunFile(string path, ScriptCompiler prepared)
        {
            string source;
            if (!ReadScript(path, out source)) return 1;
            try
            {
                return Run(Path.GetFileName(path), source, prepared);
            }
            catch (Exception e)
            {
                // Not the script's exception (those are reported by RunStatements): the runner's.
                Console.Error.WriteLine("csx-runner: internal error: " + e);
                return 1;
            }
        }

        // A compiler with its references and default usings, its errors on stderr; null
        // after printing them.
        public static ScriptCompiler PrepareCompiler(string fileName)
        {
            var compiler = new ScriptCompiler(fileName, Console.Error);
            return compiler.Prepare() ? compiler : null;
        }

        // Load, compile, run: a step that fails has printed why.
        static int Run(string fileName, string source, ScriptCompiler compiler)
        {
            CsxScript script = Load(fileName, source);
            if (script == null) return 1;
            if (compiler == null) compiler = PrepareCompiler(fileName);
            if (compiler == null) return 1;
            List<CompiledStatement> statements = compiler.Compile(script);
            if (statements == null) return 1;
            return RunStatements(statements, compiler.Lines, fileName);
        }

        static void SetUpOutput()
        {
            var utf8 = new UTF8Encoding(false);
            var stdout = new StreamWriter(Console.OpenStandardOutput(), utf8) { AutoFlush = true };
            var stderr = new StreamWriter(Console.OpenStandardError(), utf8) { AutoFlush = true };
            Console.SetOut(TextWriter.Synchronized(stdout));
            Console.SetError(TextWriter.Synchronized(stderr));
        }

        // Console.In reads the process's standard input as UTF-8.
        public static void SetUpInput()
        {
            var utf8 = new UTF8Encoding(false);
            Console.SetIn(TextReader.Synchronized(new StreamReader(Console.OpenStandardInput(), utf8, false)));
        }

        // The arguments from argv[first] on, without a leading `--`.
        static IList<string> ScriptArguments(string[] argv, int first)
        {
            var scriptArgs = new List<string>();
            for (int k = first; k < argv.Length; k++)
            {
                if (k == first && argv[k] == "--") continue;
                scriptArgs.Add(argv[k]);
            }
            return scriptArgs.AsReadOnly();
        }

        static bool ReadScript(string path, out string source)
        {
            try
            {
                source = File.ReadAllText(path, new UTF8Encoding(false));
                return true;
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("error: cannot read script {0}: {1}", path, e.Message);
                source = null;
                return false;
            }
        }

        // The script split into evaluator inputs; null after printing why it cannot be.
        static CsxScript Load(string fileName, string source)
        {
            var script = new CsxScript(fileName, source);
            if (script.Errors.Count == 0) return script;
            foreach (var e in script.Errors) Console.Error.WriteLine(e);
            return null;
        }

        // Runs the statements in order: 0, or 1 after reporting an unhandled exception.
        public static int RunStatements(List<CompiledStatement> statements, LineNumbers lines, string fileName)
        {
            try
            {
                foreach (var statement in statements) RunStatement(statement);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("Unhandled exception. " + StackTraces.Describe(e, lines, fileName));
                return 1;
            }
            return 0;
        }

        public static void RunStatement(CompiledStatement statement)
        {
            object result = null;
            statement.Method(ref result);
            // A statement with await is compiled into an async method whose Task comes
            // back as the result: it completes before the next statement runs.
            var task = result as Task;
            if (statement.HasAwait && task != null) task.GetAwaiter().GetResult();
        }
    }
}
