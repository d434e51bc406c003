// Compiles a split .csx with Mono's evaluator: references, default usings, the
// script's usings, types and methods, then each statement, all before any runs.

using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
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

    sealed class CompiledStatement
    {
        public CompiledMethod Method;
        public bool HasAwait;  // the method returns the statement's Task: wait for it
    }

    sealed class ScriptCompiler
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

        // Thrown after the compiler's errors are printed: nothing more is compiled.
        sealed class ScriptFailed : Exception { }

        readonly CompilerSettings settings;
        readonly CsxReportPrinter printer;
        readonly Evaluator evaluator;
        CsxScript script;

        // main.csx lines of the compiled methods; null when Mono.CSharp is not the one
        // LineNumbers knows.
        public readonly LineNumbers Lines;

        // An evaluator for fileName whose compile errors go to errors; Prepare, then Compile.
        public ScriptCompiler(string fileName, TextWriter errors)
        {
            printer = new CsxReportPrinter(fileName, errors);
            settings = new CompilerSettings();
            settings.Version = LanguageVersion.Latest;
            settings.TabSize = CsxReportPrinter.TabSize;
            settings.Unsafe = true;
            var context = new CompilerContext(settings, printer);
            evaluator = new Evaluator(context);
            evaluator.WaitOnTask = false; // the runner awaits the script's Task itself
            Lines = LineNumbers.Attach(evaluator, context, fileName);
        }

        // What needs no script: the references and the default usings. False after
        // printing the errors (none are expected).
        public bool Prepare()
        {
            try
            {
                ReferenceAssemblies();
                EvalDefaultUsings();
                return true;
            }
            catch (ScriptFailed)
            {
                return false;
            }
        }

        // The statements of a prepared compiler's script, ready to run, or null after
        // printing the compile errors.
        public List<CompiledStatement> Compile(CsxScript script)
        {
            this.script = script;
            // The tokenizer asks the settings at every #if, so symbols may come after Prepare.
            foreach (var symbol in script.DefinedSymbols) settings.AddConditionalSymbol(symbol);
            try
            {
                ReferenceScriptAssemblies();
                EvalDeclarations();
                return CompileStatements();
            }
            catch (ScriptFailed)
            {
                return null;
            }
        }

        void ReferenceAssemblies()
        {
            foreach (var name in ExtraReferences) evaluator.LoadAssembly(name);
            evaluator.ReferenceAssembly(typeof(ScriptGlobals).Assembly);
            evaluator.InteractiveBaseClass = typeof(ScriptGlobals);
            FailOnErrors();
        }

        // `#r "Assembly"` lines: load the named assembly (from Mono's GAC), unless it is
        // referenced already.
        void ReferenceScriptAssemblies()
        {
            var referenced = new HashSet<string>(StringComparer.OrdinalIgnoreCase) {
                "mscorlib", "System", "System.Core", "System.Xml", "Microsoft.CSharp",
            };
            referenced.UnionWith(ExtraReferences);
            foreach (var reference in script.References)
            {
                if (!referenced.Add(reference.Name)) continue;
                printer.SetChunk(null, 0, reference.Line);
                evaluator.LoadAssembly(reference.Name);
                FailOnErrors();
            }
        }

        void EvalDefaultUsings()
        {
            printer.SetChunk(null, 0, 0);
            var defaults = new StringBuilder();
            foreach (var ns in DefaultUsings) defaults.Append("using ").Append(ns).Append("; ");
            Eval(defaults.ToString());
            // Own input: `using static` followed by anything else fails in mcs.
            Eval("using static System.Console;");
        }

        // The script's usings, types and top-level methods, one input each. Every
        // input from the script starts with a line break: on the first line of an
        // input, mcs columns are off (the evaluator puts a token of its own there),
        // so line 1 of the file is line 2 of the input (lineDelta 1).
        void EvalDeclarations()
        {
            string usings = script.UsingChunkText();
            if (usings != null)
            {
                printer.SetChunk(usings, 1, 0);
                Eval(usings);
            }

            List<Shift> shifts;
            string types = script.TypeChunkText(out shifts);
            if (types != null)
            {
                printer.SetChunk(types, 1, 0, shifts);
                Eval(types);
            }

            string methods = script.MethodChunkText("__DswScript", "Dsw.ScriptGlobals", out shifts);
            if (methods != null)
            {
                printer.SetChunk(methods, 1, 0, shifts);
                printer.UnknownNameHint = "note: in the mono sandbox a top-level method cannot use the script's variables; pass them as parameters";
                Eval(methods);
                printer.UnknownNameHint = null;
                printer.SetChunk(null, 0, 0);
                // Not InteractiveBaseClass = typeof(__DswScript): importing a type of
                // the evaluator's dynamic assembly by reflection fails (CS0584 "not
                // supported in a dynamic module") as soon as a signature uses a script type.
                Eval("using static __DswScript;");
            }
        }

        // Each statement is compiled on its own (its top-level variables become fields
        // of the evaluator, as they are fields of the script class in Roslyn: a lambda
        // parameter may then reuse the name of a script variable).
        List<CompiledStatement> CompileStatements()
        {
            var compiled = new List<CompiledStatement>();
            foreach (var statement in script.Statements)
            {
                printer.SetChunk(statement.Input, 1, 0);
                CompiledMethod method;
                string partial = evaluator.Compile(statement.Input, out method);
                FailOnErrors();
                FailIfPartial(partial);
                if (method == null) continue; // a declaration without initialiser
                compiled.Add(new CompiledStatement { Method = method, HasAwait = statement.HasAwait });
            }
            return compiled;
        }

        // Evaluates one input that runs no script code (usings, declarations).
        void Eval(string input)
        {
            object result;
            bool resultSet;
            string partial = evaluator.Evaluate(input, out result, out resultSet);
            FailOnErrors();
            FailIfPartial(partial);
        }

        void FailOnErrors()
        {
            if (printer.Errors > 0) throw new ScriptFailed();
        }

        // The scanner checks brackets and literals, so a partial input is rare
        // (e.g. a statement cut short at the end of the file).
        void FailIfPartial(string partial)
        {
            if (partial == null) return;
            printer.ReportEndOfFile();
            throw new ScriptFailed();
        }
    }
}
