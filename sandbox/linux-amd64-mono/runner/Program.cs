// csx-runner: runs one C# script (.csx) on Mono, the way dotnet-script runs it
// on .NET, for the dsw linux-amd64-mono sandbox image.
//
//   mono /opt/dsw/csx-runner.exe /tmp/script/main.csx [--] [script args...]
//
// Built on Mono.CSharp.Evaluator (the engine of Mono's `csharp` REPL), compiled in
// the image with: mcs -r:Mono.CSharp.dll -out:/opt/dsw/csx-runner.exe *.cs
//
// Exit codes: 0 when the script ran to its end; 1 for a compile error (messages on
// stderr as `main.csx(line,col): error CSxxxx: text`, positions in the original
// file, columns counted like Roslyn: a tab is one column) or an unhandled exception
// (`Unhandled exception. <type>: <message>` and the stack on stderr);
// Environment.Exit(n) in the script exits with n.
//
// How a script is run. The evaluator cannot take a whole .csx in one input: using
// directives, type declarations and statements each need an input of their own, and
// it has no top-level methods. So a small C#-aware scanner (strings, verbatim and
// interpolated strings, char literals, comments, preprocessor lines, nesting of
// (), [] and {}) splits the file at top level into:
//   - using directives (`using X;`, `using static X;`, `using A = B;`; not the
//     `using (...)` statement);
//   - type declarations (attributes and modifiers, then class, struct, interface,
//     enum, delegate or namespace);
//   - top-level method declarations (`int Sq(int a) { ... }`, `async Task F() => ...;`);
//   - statements (everything else; `if {} else {}`, `try {} catch {}`, `do {} while ();`
//     are one statement each).
// Then, as in Roslyn scripting, where every declaration is visible to the whole
// script, it compiles: the default usings of dotnet-script and `using static
// System.Console`, the script's usings (one input), all its types (one input; a
// type without an access modifier is made public, as the evaluator's variables are
// public fields), all its methods (one input: static members of a class
// `__DswScript`, then `using static __DswScript;`), and each statement on its own
// (its top-level variables become fields, like the fields of Roslyn's script class,
// so a lambda parameter may reuse the name of a script variable). All of this is
// compiled before the first statement runs: a compile error anywhere runs nothing.
// The statements then run in order; a statement with `await` is an async method
// whose Task is waited for. Each input holds its code at the original line and
// column (the rest of the file blanked out, line breaks kept), so the compiler's
// positions are those of the file. Warnings are not shown.
//
// Supported: what Mono 6.8's mcs compiles (C# 7.x, see below for gaps), top-level
// await, `Args` (the script arguments), classes, structs, enums, interfaces and
// delegates (usable before their declaration), extension methods in a top-level
// static class, top-level methods that use their parameters, other methods, script
// types and static members, `static`/`readonly`/`const` top-level variables (the
// modifier is dropped), `#r "AssemblyName"` for assemblies Mono has installed (e.g.
// `#r "System.Xml.Linq"`), a `#!` first line, `#region`, `#if`, `#define`.
// References: mscorlib, System, System.Core, System.Numerics, System.Xml,
// System.Xml.Linq, Microsoft.CSharp.
// Not supported (each fails as a compile error, exit 1, before anything runs):
//   - `#r "nuget: ..."` and `#load` (this sandbox is offline, there is no NuGet);
//   - a top-level method that uses a script variable (the methods live in a class
//     of their own: CS0103 "The name `x' does not exist in the current context");
//   - top-level properties, and `case` labels naming a top-level const;
//   - exception filters (`catch ... when`): mcs emits invalid IL for them here;
//   - what mcs lacks: local functions, records, `case X when`, tuple deconstruction
//     into existing variables, nullable reference types (`#nullable` lines are
//     ignored), C# 8+ syntax (switch expressions, ranges, `using var`, ...);
//   - goto between top-level statements (each statement is compiled on its own).
// Expression results are not printed (dotnet-script does not print them either).
//
// Standard streams: stdout and stderr are UTF-8 (no BOM) and flushed on every
// write, so output is not lost when the sandbox kills the process at its time
// limit; stdin is read as UTF-8.

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
