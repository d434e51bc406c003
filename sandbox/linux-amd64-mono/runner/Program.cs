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
            SetUpConsole();
            if (argv.Length < 1 || argv[0].Length == 0)
            {
                Console.Error.WriteLine("usage: csx-runner.exe SCRIPT.csx [--] [ARGS...]");
                return 64;
            }
            string path = argv[0];
            ScriptGlobals.SetArgs(ScriptArguments(argv));
            string source;
            if (!ReadScript(path, out source)) return 1;
            try
            {
                return Run(Path.GetFileName(path), source);
            }
            catch (Exception e)
            {
                // Not the script's exception (those are reported by RunStatements): the runner's.
                Console.Error.WriteLine("csx-runner: internal error: " + e);
                return 1;
            }
        }

        // Load, compile, run: a step that fails has printed why.
        static int Run(string fileName, string source)
        {
            CsxScript script = Load(fileName, source);
            if (script == null) return 1;
            var compiler = new ScriptCompiler(fileName, script);
            List<CompiledStatement> statements = compiler.Compile();
            if (statements == null) return 1;
            return RunStatements(statements, compiler.Lines, fileName);
        }

        static void SetUpConsole()
        {
            var utf8 = new UTF8Encoding(false);
            var stdout = new StreamWriter(Console.OpenStandardOutput(), utf8) { AutoFlush = true };
            var stderr = new StreamWriter(Console.OpenStandardError(), utf8) { AutoFlush = true };
            Console.SetOut(TextWriter.Synchronized(stdout));
            Console.SetError(TextWriter.Synchronized(stderr));
            Console.SetIn(TextReader.Synchronized(new StreamReader(Console.OpenStandardInput(), utf8, false)));
        }

        // The arguments after the script path, without a leading `--`.
        static IList<string> ScriptArguments(string[] argv)
        {
            var scriptArgs = new List<string>();
            for (int k = 1; k < argv.Length; k++)
            {
                if (k == 1 && argv[k] == "--") continue;
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
        static int RunStatements(List<CompiledStatement> statements, LineNumbers lines, string fileName)
        {
            try
            {
                foreach (var statement in statements)
                {
                    object result = null;
                    statement.Method(ref result);
                    // A statement with await is compiled into an async method whose
                    // Task comes back as the result: it completes before the next one.
                    var task = result as Task;
                    if (statement.HasAwait && task != null) task.GetAwaiter().GetResult();
                }
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("Unhandled exception. " + StackTraces.Describe(e, lines, fileName));
                return 1;
            }
            return 0;
        }
    }
}
