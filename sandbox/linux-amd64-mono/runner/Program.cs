// The runner's entry point: runs one C# script (.csx) on Mono's evaluator the way
// dotnet-script runs it on .NET; how, and what is supported, is told in
// sandbox/README.md (the mono type).

using System;
using System.Collections.Generic;
using System.IO;
using System.Reflection;
using System.Text;
using System.Threading.Tasks;
using Mono.CSharp;

namespace Dsw
{
    // Base class of the evaluator's statement host: its static members are visible
    // to script statements unqualified, like the globals of dotnet-script.
    public class ScriptGlobals
    {
        static IList<string> args = new List<string>().AsReadOnly();

        // The arguments given after the script path (dotnet-script: after `--`).
        public static IList<string> Args { get { return args; } }

        internal static void SetArgs(IList<string> value) { args = value; }
    }

    static class Program
    {
        // dotnet-script's default imports (ScriptOptions.Imports of Dotnet.Script.Core).
        static readonly string[] DefaultUsings = {
            "System", "System.IO", "System.Collections.Generic", "System.Diagnostics",
            "System.Dynamic", "System.Linq", "System.Linq.Expressions", "System.Text",
            "System.Threading.Tasks",
        };

        // The assemblies referenced besides those Mono's evaluator references by
        // itself (mscorlib, System, System.Core, System.Xml, Microsoft.CSharp); loading
        // one of those again makes every call into it ambiguous (CS0121).
        static readonly string[] ExtraReferences = { "System.Numerics", "System.Xml.Linq" };

        public static int Main(string[] argv)
        {
            SetUpConsole();
            if (argv.Length < 1 || argv[0].Length == 0)
            {
                Console.Error.WriteLine("usage: csx-runner.exe SCRIPT.csx [--] [ARGS...]");
                return 64;
            }
            string path = argv[0];
            var scriptArgs = new List<string>();
            for (int k = 1; k < argv.Length; k++)
            {
                if (k == 1 && argv[k] == "--") continue;
                scriptArgs.Add(argv[k]);
            }
            ScriptGlobals.SetArgs(scriptArgs.AsReadOnly());

            string fileName = Path.GetFileName(path);
            string source;
            try
            {
                source = File.ReadAllText(path, new UTF8Encoding(false));
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("error: cannot read script {0}: {1}", path, e.Message);
                return 1;
            }
            try
            {
                return Run(fileName, source);
            }
            catch (ScriptFailed)
            {
                return 1;
            }
            catch (Exception e)
            {
                // Not the script's exception (those are reported by Run): the runner's.
                Console.Error.WriteLine("csx-runner: internal error: " + e);
                return 1;
            }
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

        sealed class ScriptFailed : Exception { }

        static int Run(string fileName, string source)
        {
            var script = new CsxScript(fileName, source);
            var printer = new CsxReportPrinter(fileName, Console.Error);

            if (script.Errors.Count > 0)
            {
                foreach (var e in script.Errors) Console.Error.WriteLine(e);
                return 1;
            }

            var settings = new CompilerSettings();
            settings.Version = LanguageVersion.Latest;
            settings.TabSize = CsxReportPrinter.TabSize;
            settings.Unsafe = true;
            foreach (var symbol in script.DefinedSymbols) settings.AddConditionalSymbol(symbol);
            var evaluator = new Evaluator(new CompilerContext(settings, printer));
            evaluator.WaitOnTask = false; // the runner awaits the script's Task itself

            foreach (var name in ExtraReferences) evaluator.LoadAssembly(name);
            evaluator.ReferenceAssembly(typeof(ScriptGlobals).Assembly);
            evaluator.InteractiveBaseClass = typeof(ScriptGlobals);
            if (printer.Errors > 0) return 1;

            // `#r "Assembly"` lines: load the named assembly (from Mono's GAC), unless
            // it is referenced already.
            var referenced = new HashSet<string>(StringComparer.OrdinalIgnoreCase) {
                "mscorlib", "System", "System.Core", "System.Xml", "Microsoft.CSharp",
            };
            referenced.UnionWith(ExtraReferences);
            foreach (var reference in script.References)
            {
                if (!referenced.Add(reference.Name)) continue;
                printer.SetChunk(null, 0, reference.Line);
                evaluator.LoadAssembly(reference.Name);
                if (printer.Errors > 0) return 1;
            }

            printer.SetChunk(null, 0, 0);
            var defaults = new StringBuilder();
            foreach (var ns in DefaultUsings) defaults.Append("using ").Append(ns).Append("; ");
            Eval(evaluator, printer, defaults.ToString());
            // Own input: `using static` followed by anything else fails in mcs.
            Eval(evaluator, printer, "using static System.Console;");
            if (printer.Errors > 0) return 1;

            // Every input from the script starts with a line break: on the first line of
            // an input, mcs columns are off (the evaluator puts a token of its own
            // there), so line 1 of the file is line 2 of the input (lineDelta 1).
            string usings = script.UsingChunkText();
            if (usings != null)
            {
                printer.SetChunk(usings, 1, 0);
                Eval(evaluator, printer, usings);
            }

            List<Shift> shifts;
            string types = script.TypeChunkText(out shifts);
            if (types != null)
            {
                printer.SetChunk(types, 1, 0, shifts);
                Eval(evaluator, printer, types);
            }

            string methods = script.MethodChunkText("__DswScript", "Dsw.ScriptGlobals", out shifts);
            if (methods != null)
            {
                printer.SetChunk(methods, 1, 0, shifts);
                printer.UnknownNameHint = "note: in the mono sandbox a top-level method cannot use the script's variables; pass them as parameters";
                Eval(evaluator, printer, methods);
                printer.UnknownNameHint = null;
                printer.SetChunk(null, 0, 0);
                // Not InteractiveBaseClass = typeof(__DswScript): importing a type of
                // the evaluator's dynamic assembly by reflection fails (CS0584 "not
                // supported in a dynamic module") as soon as a signature uses a script type.
                Eval(evaluator, printer, "using static __DswScript;");
            }

            // Statements: each one is compiled on its own (its top-level variables
            // become fields of the evaluator, as they are fields of the script class in
            // Roslyn: a lambda parameter may then reuse the name of a script variable),
            // all of them before the first one runs.
            var compiled = new List<CompiledMethod>();
            var awaits = new List<bool>();
            foreach (var statement in script.Statements)
            {
                printer.SetChunk(statement.Input, 1, 0);
                CompiledMethod method;
                string partial = evaluator.Compile(statement.Input, out method);
                if (printer.Errors > 0) return 1;
                if (partial != null)
                {
                    printer.ReportEndOfFile();
                    return 1;
                }
                if (method == null) continue; // a declaration without initialiser
                compiled.Add(method);
                awaits.Add(statement.HasAwait);
            }
            try
            {
                for (int k = 0; k < compiled.Count; k++)
                {
                    object result = null;
                    compiled[k](ref result);
                    // A statement with await is compiled into an async method whose
                    // Task comes back as the result: it completes before the next one.
                    var task = result as Task;
                    if (awaits[k] && task != null) task.GetAwaiter().GetResult();
                }
            }
            catch (Exception e)
            {
                ReportUnhandled(e);
                return 1;
            }
            return 0;
        }

        // Evaluates one input; on a compile error, prints nothing more and fails.
        // Exceptions thrown by script code propagate to the caller.
        static object Eval(Evaluator evaluator, CsxReportPrinter printer, string input)
        {
            object result;
            bool resultSet;
            string partial = evaluator.Evaluate(input, out result, out resultSet);
            if (printer.Errors > 0) throw new ScriptFailed();
            if (partial != null)
            {
                // The scanner checks brackets and literals, so this is rare
                // (e.g. a statement cut short at the end of the file).
                printer.ReportEndOfFile();
                throw new ScriptFailed();
            }
            return resultSet ? result : null;
        }

        static void ReportUnhandled(Exception e)
        {
            while (e is TargetInvocationException && e.InnerException != null) e = e.InnerException;
            var lines = new List<string>(e.ToString().Replace("\r\n", "\n").Split('\n'));
            // Drop the runner's and the evaluator's own frames from the end.
            while (lines.Count > 1)
            {
                string l = lines[lines.Count - 1].Trim();
                if (l.Length == 0
                    || l.StartsWith("at Mono.CSharp.", StringComparison.Ordinal)
                    || l.StartsWith("at Dsw.", StringComparison.Ordinal)
                    || l.StartsWith("at System.Runtime.CompilerServices.TaskAwaiter", StringComparison.Ordinal)
                    || l.StartsWith("at System.Runtime.ExceptionServices.ExceptionDispatchInfo", StringComparison.Ordinal)
                    || l.StartsWith("--- End of stack trace from previous location", StringComparison.Ordinal))
                    lines.RemoveAt(lines.Count - 1);
                else
                    break;
            }
            Console.Error.WriteLine("Unhandled exception. " + string.Join("\n", lines));
        }
    }
}
