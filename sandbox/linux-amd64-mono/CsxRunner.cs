// CsxRunner.cs: runs one C# script (.csx) on Mono, the way dotnet-script runs it
// on .NET, for the dsw linux-amd64-mono sandbox image.
//
//   mono /opt/dsw/csx-runner.exe /tmp/script/main.csx [--] [script args...]
//
// Built on Mono.CSharp.Evaluator (the engine of Mono's `csharp` REPL), compiled in
// the image with: mcs -r:Mono.CSharp.dll -out:/opt/dsw/csx-runner.exe CsxRunner.cs
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

    // Where a piece of text was inserted into a chunk (method chunk: `public static `).
    sealed class Shift
    {
        public int Line;    // 1-based line in the original file
        public int Column;  // 1-based column in the original file where text was inserted
        public int Length;
    }

    // Prints the compiler's errors as `main.csx(line,col): error CSxxxx: text`, with
    // positions mapped back from the chunk being evaluated to the original file.
    sealed class CsxReportPrinter : ReportPrinter
    {
        public const int TabSize = 8;

        readonly string fileName;
        readonly TextWriter writer;
        string[] chunkLines;
        string chunk;
        int lineDelta;      // chunk line = original line + lineDelta
        int fallbackLine;   // used for messages without a location
        List<Shift> shifts;

        public int Errors;  // never reset (the evaluator resets ErrorsCount per input)
        public string UnknownNameHint; // printed once after a CS0103 in the current chunk

        public CsxReportPrinter(string fileName, TextWriter writer)
        {
            this.fileName = fileName;
            this.writer = writer;
        }

        public void SetChunk(string text, int lineDelta, int fallbackLine, List<Shift> shifts = null)
        {
            chunk = text;
            chunkLines = null;
            this.lineDelta = lineDelta;
            this.fallbackLine = fallbackLine;
            this.shifts = shifts;
        }

        public override void Print(AbstractMessage msg, bool showFullPath)
        {
            base.Print(msg, showFullPath);
            if (msg.IsWarning) return;
            Errors++;
            int code = msg.Code < 0 ? 8000 - msg.Code : msg.Code;
            string where;
            if (msg.Location.IsNull || msg.Location.Row <= 0)
                where = fallbackLine > 0 ? string.Format("{0}({1},1)", fileName, fallbackLine) : fileName;
            else
            {
                int line, col;
                Map(msg.Location.Row, msg.Location.Column, out line, out col);
                where = string.Format("{0}({1},{2})", fileName, line, col);
            }
            writer.WriteLine("{0}: error CS{1:0000}: {2}", where, code, msg.Text);
            if (code == 103 && UnknownNameHint != null)
            {
                writer.WriteLine(UnknownNameHint);
                UnknownNameHint = null;
            }
        }

        public void ReportEndOfFile()
        {
            int line = 1, col = 1;
            if (chunk != null)
            {
                var lines = Lines();
                line = Math.Max(1, lines.Length - lineDelta);
                col = lines[lines.Length - 1].TrimEnd('\r').Length + 1;
            }
            Errors++;
            writer.WriteLine("{0}({1},{2}): error CS1733: Unexpected end of file: the script is incomplete", fileName, line, col);
        }

        string[] Lines()
        {
            if (chunkLines == null) chunkLines = (chunk ?? "").Split('\n');
            return chunkLines;
        }

        // mcs counts a tab as advancing to the next multiple of TabSize; Roslyn (and
        // so dotnet-script) counts every UTF-16 code unit, a tab included, as 1.
        void Map(int row, int mcsCol, out int line, out int col)
        {
            col = mcsCol;
            if (chunk != null && row >= 1 && row <= Lines().Length)
            {
                string text = Lines()[row - 1];
                int v = 0, idx = 0;
                while (idx < text.Length && v + 1 < mcsCol)
                {
                    v = text[idx] == '\t' ? (v + TabSize) / TabSize * TabSize : v + 1;
                    idx++;
                }
                col = idx + 1;
            }
            line = Math.Max(1, row - lineDelta);
            if (shifts != null)
            {
                // Shifts are sorted by position; col is in the shifted text.
                int acc = 0;
                foreach (var s in shifts)
                {
                    if (s.Line != line) continue;
                    int at = s.Column + acc; // where the inserted text starts in the chunk
                    if (col >= at + s.Length) acc += s.Length;
                    else if (col >= at) { col = s.Column + acc; break; }
                    else break;
                }
                col -= acc;
            }
        }
    }

    enum TokenKind { Identifier, Punct, Literal, Directive }

    sealed class Token
    {
        public TokenKind Kind;
        public string Text;   // identifiers: without a leading @; punctuation: the operator
        public bool Verbatim; // identifier written with @ (never a keyword)
        public int Start;     // offsets in the source, End exclusive
        public int End;
        public int Match = -1; // for ( [ {: index of the closing token, -1 if none
    }

    enum ItemKind { Using, Type, Method, Statement }

    sealed class Item
    {
        public ItemKind Kind;
        public int Start, End;       // source offsets, End exclusive
        public int FirstToken;       // token index of the first token
        public int LastToken;
    }

    sealed class StatementInput
    {
        public string Input;   // the statement at its original line and column
        public bool HasAwait;  // compiled into an async method: wait for its Task
    }

    sealed class AssemblyReference
    {
        public string Name;
        public int Line;
    }

    // Scans and splits a .csx source; see the top of this file.
    sealed class CsxScript
    {
        readonly string fileName;
        readonly string src;
        readonly List<Token> tokens = new List<Token>();
        readonly List<Token> directives = new List<Token>();
        readonly List<Item> items = new List<Item>();
        readonly List<int> lineStarts = new List<int>();
        readonly List<KeyValuePair<int, int>> blanked = new List<KeyValuePair<int, int>>(); // dropped modifiers

        public readonly List<string> Errors = new List<string>();
        public readonly List<AssemblyReference> References = new List<AssemblyReference>();
        public readonly List<string> DefinedSymbols = new List<string>();
        public readonly List<StatementInput> Statements = new List<StatementInput>();
        readonly List<Token> shared = new List<Token>(); // top-level directives for every input

        static readonly HashSet<string> Keywords = new HashSet<string>(new[] {
            "abstract", "as", "base", "bool", "break", "byte", "case", "catch", "char", "checked",
            "class", "const", "continue", "decimal", "default", "delegate", "do", "double", "else",
            "enum", "event", "explicit", "extern", "false", "finally", "fixed", "float", "for",
            "foreach", "goto", "if", "implicit", "in", "int", "interface", "internal", "is", "lock",
            "long", "namespace", "new", "null", "object", "operator", "out", "override", "params",
            "private", "protected", "public", "readonly", "ref", "return", "sbyte", "sealed",
            "short", "sizeof", "stackalloc", "static", "string", "struct", "switch", "this",
            "throw", "true", "try", "typeof", "uint", "ulong", "unchecked", "unsafe", "ushort",
            "using", "virtual", "void", "volatile", "while",
        });

        static readonly HashSet<string> PredefinedTypes = new HashSet<string>(new[] {
            "bool", "byte", "char", "decimal", "double", "float", "int", "long", "object",
            "sbyte", "short", "string", "uint", "ulong", "ushort", "void",
        });

        static readonly HashSet<string> Modifiers = new HashSet<string>(new[] {
            "public", "private", "protected", "internal", "static", "sealed", "abstract",
            "partial", "unsafe", "readonly", "ref", "virtual", "override", "extern", "async",
            "new", "volatile",
        });

        static readonly HashSet<string> AccessModifiers = new HashSet<string>(new[] {
            "public", "private", "protected", "internal",
        });

        public CsxScript(string fileName, string source)
        {
            this.fileName = fileName;
            src = source.Length > 0 && source[0] == '\uFEFF' ? source.Substring(1) : source; // BOM
            lineStarts.Add(0);
            for (int k = 0; k < src.Length; k++)
                if (src[k] == '\n') lineStarts.Add(k + 1);
            Scan();
            if (Errors.Count > 0) return;
            MatchBrackets();
            if (Errors.Count > 0) return;
            CheckUnsupported();
            if (Errors.Count > 0) return;
            Split();
            HandleDirectives();
            if (Errors.Count > 0) return;
            foreach (var it in items)
                if (it.Kind == ItemKind.Statement)
                    Statements.Add(new StatementInput { Input = StatementText(it), HasAwait = HasAwait(it) });
        }

        // ---- positions and errors ------------------------------------------------

        int LineOf(int offset)
        {
            int lo = 0, hi = lineStarts.Count - 1;
            while (lo < hi)
            {
                int mid = (lo + hi + 1) / 2;
                if (lineStarts[mid] <= offset) lo = mid; else hi = mid - 1;
            }
            return lo + 1;
        }

        string Pos(int offset)
        {
            int line = LineOf(offset);
            return string.Format("{0}({1},{2})", fileName, line, offset - lineStarts[line - 1] + 1);
        }

        void Error(int offset, string codeAndText)
        {
            Errors.Add(Pos(offset) + ": error " + codeAndText);
        }

        // ---- scanner ---------------------------------------------------------------

        static bool IsIdentStart(char c) { return c == '_' || char.IsLetter(c); }

        static bool IsIdentPart(char c)
        {
            return c == '_' || char.IsLetterOrDigit(c)
                || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.NonSpacingMark
                || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.SpacingCombiningMark
                || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.ConnectorPunctuation;
        }

        char At(int k) { return k < src.Length ? src[k] : '\0'; }

        void Add(TokenKind kind, int start, int end, string text)
        {
            tokens.Add(new Token { Kind = kind, Start = start, End = end, Text = text });
        }

        void Scan()
        {
            int i = 0;
            bool lineStart = true; // only whitespace so far on this line
            while (i < src.Length)
            {
                char c = src[i];
                if (c == '\n') { lineStart = true; i++; continue; }
                if (char.IsWhiteSpace(c)) { i++; continue; }
                if (c == '#' && lineStart)
                {
                    int e = i;
                    while (e < src.Length && src[e] != '\n' && src[e] != '\r') e++;
                    directives.Add(new Token { Kind = TokenKind.Directive, Start = i, End = e, Text = src.Substring(i, e - i) });
                    i = e;
                    continue;
                }
                lineStart = false;
                int start = i;
                if (c == '/' && At(i + 1) == '/')
                {
                    while (i < src.Length && src[i] != '\n') i++;
                    continue;
                }
                if (c == '/' && At(i + 1) == '*')
                {
                    int e = src.IndexOf("*/", i + 2, StringComparison.Ordinal);
                    if (e < 0) { Error(start, "CS1035: End-of-file found, '*/' expected"); return; }
                    i = e + 2;
                    continue;
                }
                int end = SkipLiteral(i);
                if (end == -1) return; // error reported
                if (end > i) { Add(TokenKind.Literal, start, end, null); i = end; continue; }
                if (c == '@' && IsIdentStart(At(i + 1)))
                {
                    i += 2;
                    while (i < src.Length && IsIdentPart(src[i])) i++;
                    tokens.Add(new Token { Kind = TokenKind.Identifier, Start = start, End = i, Text = src.Substring(start + 1, i - start - 1), Verbatim = true });
                    continue;
                }
                if (IsIdentStart(c))
                {
                    while (i < src.Length && IsIdentPart(src[i])) i++;
                    Add(TokenKind.Identifier, start, i, src.Substring(start, i - start));
                    continue;
                }
                if (char.IsDigit(c) || (c == '.' && char.IsDigit(At(i + 1))))
                {
                    i++;
                    while (i < src.Length)
                    {
                        char d = src[i];
                        if (char.IsLetterOrDigit(d) || d == '_') i++;
                        else if (d == '.' && char.IsDigit(At(i + 1))) i++;
                        else if ((d == '+' || d == '-') && (src[i - 1] == 'e' || src[i - 1] == 'E')
                                 && !(src[start] == '0' && (At(start + 1) == 'x' || At(start + 1) == 'X'))) i++;
                        else break;
                    }
                    Add(TokenKind.Literal, start, i, null);
                    continue;
                }
                if (c == '=' && At(i + 1) == '>') { Add(TokenKind.Punct, i, i + 2, "=>"); i += 2; continue; }
                if (c == ':' && At(i + 1) == ':') { Add(TokenKind.Punct, i, i + 2, "::"); i += 2; continue; }
                Add(TokenKind.Punct, i, i + 1, c.ToString());
                i++;
            }
        }

        // If a string or char literal starts at i, returns the offset after it; i if
        // none starts there; -1 after reporting an unterminated literal.
        int SkipLiteral(int i)
        {
            char c = At(i);
            if (c == '"') return SkipString(i, i + 1, false);
            if (c == '\'') return SkipChar(i);
            if (c == '@' && At(i + 1) == '"') return SkipString(i, i + 2, true);
            if (c == '$' && At(i + 1) == '"') return SkipInterpolated(i, i + 2, false);
            if ((c == '$' && At(i + 1) == '@' && At(i + 2) == '"') || (c == '@' && At(i + 1) == '$' && At(i + 2) == '"'))
                return SkipInterpolated(i, i + 3, true);
            return i;
        }

        int SkipString(int start, int i, bool verbatim)
        {
            while (i < src.Length)
            {
                char c = src[i];
                if (verbatim)
                {
                    if (c == '"') { if (At(i + 1) == '"') { i += 2; continue; } return i + 1; }
                    i++;
                }
                else
                {
                    if (c == '\\') { i += 2; continue; }
                    if (c == '"') return i + 1;
                    if (c == '\n' || c == '\r') break;
                    i++;
                }
            }
            Error(start, verbatim ? "CS1039: Unterminated string literal" : "CS1010: Newline in constant");
            return -1;
        }

        int SkipChar(int start)
        {
            int i = start + 1;
            while (i < src.Length && src[i] != '\n' && src[i] != '\r')
            {
                if (src[i] == '\\') { i += 2; continue; }
                if (src[i] == '\'') return i + 1;
                i++;
            }
            Error(start, "CS1010: Newline in constant");
            return -1;
        }

        int SkipInterpolated(int start, int i, bool verbatim)
        {
            while (i < src.Length)
            {
                char c = src[i];
                if (c == '{')
                {
                    if (At(i + 1) == '{') { i += 2; continue; }
                    i = SkipHole(i + 1);
                    if (i < 0) return -1;
                    continue;
                }
                if (c == '}') { i += At(i + 1) == '}' ? 2 : 1; continue; }
                if (verbatim)
                {
                    if (c == '"') { if (At(i + 1) == '"') { i += 2; continue; } return i + 1; }
                    i++;
                }
                else
                {
                    if (c == '\\') { i += 2; continue; }
                    if (c == '"') return i + 1;
                    if (c == '\n' || c == '\r') break;
                    i++;
                }
            }
            Error(start, verbatim ? "CS1039: Unterminated string literal" : "CS1010: Newline in constant");
            return -1;
        }

        // Skips the code of an interpolation hole (after its `{`) up to and including
        // the `}` that closes it; a `:` at the hole's own level starts a format string.
        int SkipHole(int i)
        {
            int depth = 0;
            int holeStart = i - 1;
            while (i < src.Length)
            {
                char c = src[i];
                if (c == '/' && At(i + 1) == '*')
                {
                    int e = src.IndexOf("*/", i + 2, StringComparison.Ordinal);
                    if (e < 0) break;
                    i = e + 2;
                    continue;
                }
                int end = SkipLiteral(i);
                if (end == -1) return -1;
                if (end > i) { i = end; continue; }
                if (c == '(' || c == '[' || c == '{') depth++;
                else if (c == ')' || c == ']') depth--;
                else if (c == '}')
                {
                    if (depth == 0) return i + 1;
                    depth--;
                }
                else if (c == ':' && depth == 0)
                {
                    while (i < src.Length && src[i] != '}' && src[i] != '"' && src[i] != '\n') i++;
                    continue;
                }
                else if (c == '\n' && depth == 0) break;
                i++;
            }
            Error(holeStart, "CS8076: Missing close delimiter '}' for interpolated expression started with '{'");
            return -1;
        }

        void MatchBrackets()
        {
            var stack = new Stack<int>();
            for (int k = 0; k < tokens.Count; k++)
            {
                var t = tokens[k];
                if (t.Kind != TokenKind.Punct) continue;
                if (t.Text == "(" || t.Text == "[" || t.Text == "{") stack.Push(k);
                else if ((t.Text == ")" || t.Text == "]" || t.Text == "}") && stack.Count > 0)
                    tokens[stack.Pop()].Match = k; // a mismatched pair is left to the compiler
            }
            if (stack.Count > 0)
            {
                // Report where Roslyn does: at the end of the file.
                var open = tokens[stack.Peek()].Text;
                string what = open == "{" ? "CS1513: } expected" : open == "(" ? "CS1026: ) expected" : "CS1003: Syntax error, ']' expected";
                Error(src.Length, what + " (the " + open + " at " + Pos(tokens[stack.Peek()].Start) + " is never closed)");
            }
        }

        // Constructs that mcs accepts but cannot run, reported as compile errors.
        void CheckUnsupported()
        {
            for (int k = 0; k < tokens.Count; k++)
            {
                if (!Is(k, "catch")) continue;
                int w = k + 1;
                if (IsPunct(w, "(") && tokens[w].Match > 0) w = tokens[w].Match + 1;
                // mcs emits invalid IL for exception filters into the evaluator's
                // dynamic assembly (InvalidProgramException at run time).
                if (Is(w, "when") && IsPunct(w + 1, "("))
                    Error(tokens[w].Start, "CS8059: Exception filters (catch ... when) are not supported in the mono sandbox");
            }
            for (int k = 0; k < tokens.Count; k++)
            {
                // C# 8 using declaration (`using var x = ...;`): mcs parses it as a
                // using directive and reports nonsense; say what it is instead.
                if (!Is(k, "using") || IsPunct(k + 1, "(") || Is(k + 1, "static")) continue;
                int t = ParseType(k + 1);
                if (t > 0 && IsIdentifier(t) && IsPunct(t + 1, "=") && !IsPunct(t + 2, "="))
                    Error(tokens[k].Start, "CS8370: using declarations (C# 8) are not supported in the mono sandbox; use a using (...) { } statement");
            }
        }

        // ---- splitter --------------------------------------------------------------

        bool Is(int k, string text)
        {
            return k < tokens.Count && tokens[k].Kind != TokenKind.Literal && !tokens[k].Verbatim && tokens[k].Text == text;
        }

        bool IsPunct(int k, string text)
        {
            return k < tokens.Count && tokens[k].Kind == TokenKind.Punct && tokens[k].Text == text;
        }

        bool IsIdentifier(int k)
        {
            return k < tokens.Count && tokens[k].Kind == TokenKind.Identifier
                && (tokens[k].Verbatim || !Keywords.Contains(tokens[k].Text));
        }

        bool IsModifier(int k)
        {
            return k < tokens.Count && tokens[k].Kind == TokenKind.Identifier && !tokens[k].Verbatim
                && Modifiers.Contains(tokens[k].Text);
        }

        // Index after a bracketed group starting at k, or -1 if it is not closed.
        int After(int k)
        {
            return tokens[k].Match < 0 ? -1 : tokens[k].Match + 1;
        }

        // From k, the index of the first `text` punctuation at this level, or -1.
        int FindAtLevel(int k, string text, string orText = null)
        {
            while (k < tokens.Count)
            {
                if (IsPunct(k, text) || (orText != null && IsPunct(k, orText))) return k;
                if (IsPunct(k, "(") || IsPunct(k, "[") || IsPunct(k, "{"))
                {
                    k = After(k);
                    if (k < 0) return -1;
                    continue;
                }
                if (IsPunct(k, ")") || IsPunct(k, "]") || IsPunct(k, "}")) return -1;
                k++;
            }
            return -1;
        }

        int SkipAttributes(int k)
        {
            while (IsPunct(k, "[") && tokens[k].Match > 0) k = tokens[k].Match + 1;
            return k;
        }

        // `<...>` type argument list starting at k; returns the index after it or -1.
        int SkipTypeArguments(int k)
        {
            if (!IsPunct(k, "<")) return -1;
            int depth = 0;
            for (; k < tokens.Count; k++)
            {
                var t = tokens[k];
                if (t.Kind == TokenKind.Identifier) continue;
                if (t.Kind != TokenKind.Punct) return -1;
                switch (t.Text)
                {
                    case "<": depth++; break;
                    case ">": depth--; if (depth == 0) return k + 1; break;
                    case ",": case ".": case "?": case "[": case "]": case "(": case ")": case "::": case "*": break;
                    default: return -1;
                }
            }
            return -1;
        }

        // A type starting at k (predefined, qualified, generic, tuple, array, nullable);
        // returns the index after it or -1.
        int ParseType(int k)
        {
            if (IsPunct(k, "("))
            {
                k = After(k);
                if (k < 0) return -1;
            }
            else if (k < tokens.Count && tokens[k].Kind == TokenKind.Identifier
                     && (tokens[k].Verbatim || !Keywords.Contains(tokens[k].Text) || PredefinedTypes.Contains(tokens[k].Text)))
            {
                k++;
                while (true)
                {
                    if ((IsPunct(k, ".") || IsPunct(k, "::")) && IsIdentifier(k + 1)) { k += 2; continue; }
                    if (IsPunct(k, "<"))
                    {
                        int e = SkipTypeArguments(k);
                        if (e < 0) return -1;
                        k = e;
                        continue;
                    }
                    break;
                }
            }
            else return -1;
            while (true)
            {
                if (IsPunct(k, "?") || IsPunct(k, "*")) { k++; continue; }
                if (IsPunct(k, "["))
                {
                    int e = k + 1;
                    while (IsPunct(e, ",")) e++;
                    if (IsPunct(e, "]")) { k = e + 1; continue; }
                }
                break;
            }
            return k;
        }

        // using directive at k: returns the index of its `;`, or -1.
        int MatchUsing(int k)
        {
            if (!Is(k, "using")) return -1;
            int j = k + 1;
            if (Is(j, "static")) return FindAtLevel(j, ";");
            if (!IsIdentifier(j) || Is(j, "var")) return -1;
            j++;
            while (true)
            {
                if ((IsPunct(j, ".") || IsPunct(j, "::")) && IsIdentifier(j + 1)) { j += 2; continue; }
                if (IsPunct(j, "<")) { int e = SkipTypeArguments(j); if (e < 0) return -1; j = e; continue; }
                break;
            }
            if (IsPunct(j, ";")) return j;
            if (IsPunct(j, "=") && !IsPunct(j + 1, "=")) return FindAtLevel(j, ";");
            return -1;
        }

        // Type declaration at k: returns the index of its last token, or -1.
        int MatchType(int k)
        {
            int j = SkipAttributes(k);
            while (IsModifier(j)) j++;
            if (Is(j, "class") || Is(j, "struct") || Is(j, "interface") || Is(j, "enum") || Is(j, "namespace"))
            {
                if (!IsIdentifier(j + 1)) return -1;
                int open = FindAtLevel(j + 2, "{", ";");
                if (open < 0 || !IsPunct(open, "{") || tokens[open].Match < 0) return -1;
                int end = tokens[open].Match;
                if (IsPunct(end + 1, ";")) end++;
                return end;
            }
            if (Is(j, "delegate") && !IsPunct(j + 1, "(") && !IsPunct(j + 1, "{"))
            {
                int t = ParseType(j + 1);
                if (t < 0 || !IsIdentifier(t)) return -1;
                return FindAtLevel(t, ";");
            }
            return -1;
        }

        // Top-level method declaration at k: returns the index of its last token, or -1.
        int MatchMethod(int k)
        {
            int j = SkipAttributes(k);
            while (IsModifier(j)) j++;
            j = ParseType(j);
            if (j < 0 || !IsIdentifier(j)) return -1;
            j++;
            if (IsPunct(j, "<")) { j = SkipTypeArguments(j); if (j < 0) return -1; }
            if (!IsPunct(j, "(")) return -1;
            j = After(j);
            if (j < 0) return -1;
            if (Is(j, "where")) { j = FindAtLevel(j, "{", "=>"); if (j < 0) return -1; }
            if (IsPunct(j, "{")) return tokens[j].Match;
            if (IsPunct(j, "=>")) return FindAtLevel(j, ";");
            return -1;
        }

        static readonly HashSet<string> ControlKeywords = new HashSet<string>(new[] {
            "if", "else", "for", "foreach", "while", "do", "using", "lock", "switch", "try",
            "catch", "finally", "fixed", "checked", "unchecked", "unsafe",
        });

        static readonly HashSet<string> BlockIntroducers = new HashSet<string>(new[] {
            "else", "try", "finally", "do", "checked", "unchecked", "unsafe",
        });

        // Index of the last token of the statement starting at k: a `;` at top level
        // (unless an `else` follows), or the `}` of a statement block (unless `else`,
        // `catch`, `finally` or the `while` of a do-while follows). Braces of lambdas
        // and initialisers do not end a statement.
        int StatementEnd(int k)
        {
            bool control = IsPunct(k, "{") || (tokens[k].Kind == TokenKind.Identifier && !tokens[k].Verbatim
                                               && ControlKeywords.Contains(tokens[k].Text));
            bool isDo = Is(k, "do");
            for (int j = k; j < tokens.Count; j++)
            {
                if (IsPunct(j, "(") || IsPunct(j, "["))
                {
                    if (tokens[j].Match < 0) return tokens.Count - 1;
                    j = tokens[j].Match;
                    continue;
                }
                if (IsPunct(j, ";"))
                {
                    if (Is(j + 1, "else")) continue;
                    return j;
                }
                if (IsPunct(j, "{"))
                {
                    if (tokens[j].Match < 0) return tokens.Count - 1;
                    bool body = control && (j == k || IsPunct(j - 1, ")") || IsPunct(j - 1, "}")
                        || (tokens[j - 1].Kind == TokenKind.Identifier && BlockIntroducers.Contains(tokens[j - 1].Text)));
                    j = tokens[j].Match;
                    if (!body) continue;
                    if (Is(j + 1, "else") || Is(j + 1, "catch") || Is(j + 1, "finally")) continue;
                    if (isDo && Is(j + 1, "while")) continue;
                    return j;
                }
                if (IsPunct(j, "}") || IsPunct(j, ")") || IsPunct(j, "]")) return j; // stray: the compiler reports it
            }
            return tokens.Count - 1;
        }

        void AddItem(ItemKind kind, int first, int last)
        {
            items.Add(new Item { Kind = kind, FirstToken = first, LastToken = last, Start = tokens[first].Start, End = tokens[last].End });
        }

        void Split()
        {
            int k = 0;
            while (k < tokens.Count)
            {
                int end;
                if ((end = MatchUsing(k)) >= 0) AddItem(ItemKind.Using, k, end);
                else if ((end = MatchType(k)) >= 0) AddItem(ItemKind.Type, k, end);
                else if ((end = MatchMethod(k)) >= 0) AddItem(ItemKind.Method, k, end);
                else
                {
                    end = StatementEnd(k);
                    DropVariableModifiers(k);
                    AddItem(ItemKind.Statement, k, end);
                }
                k = end + 1;
            }
        }

        // `static int counter = 0;` / `readonly string[] names = ...;` at top level are
        // fields in a .csx: drop the modifiers, keeping a plain variable. `const` goes
        // too: the evaluator turns a top-level const into a field that stays 0.
        void DropVariableModifiers(int k)
        {
            int j = k;
            while (j < tokens.Count && tokens[j].Kind == TokenKind.Identifier && !tokens[j].Verbatim
                   && (Is(j, "static") || Is(j, "readonly") || Is(j, "volatile") || Is(j, "const")
                       || AccessModifiers.Contains(tokens[j].Text))) j++;
            if (j == k) return;
            int t = ParseType(j);
            if (t < 0 || !IsIdentifier(t)) return;
            if (!(IsPunct(t + 1, "=") || IsPunct(t + 1, ";") || IsPunct(t + 1, ","))) return;
            blanked.Add(new KeyValuePair<int, int>(tokens[k].Start, tokens[j].Start));
        }

        void HandleDirectives()
        {
            foreach (var d in directives)
            {
                string text = d.Text.Substring(1).TrimStart();
                string word = text;
                int sp = 0;
                while (sp < text.Length && (char.IsLetter(text[sp]) || text[sp] == '!')) sp++;
                word = text.Substring(0, sp);
                string arg = text.Substring(sp).Trim();
                int line = LineOf(d.Start);
                if (d.Text.StartsWith("#!", StringComparison.Ordinal) || word == "region" || word == "endregion"
                    || word == "nullable" || word == "line")
                    continue; // dropped: shebang (line 1), regions, nullable context, #line
                if (word == "r" || word == "load")
                {
                    string name = Unquote(arg);
                    if (name == null)
                        Errors.Add(string.Format("{0}({1},1): error CS7010: Quoted file name expected", fileName, line));
                    else if (name.StartsWith("nuget:", StringComparison.OrdinalIgnoreCase))
                        Errors.Add(string.Format("{0}({1},1): error: NuGet references are not supported in the mono sandbox", fileName, line));
                    else if (word == "load")
                        Errors.Add(string.Format("{0}({1},1): error: #load is not supported in the mono sandbox (only the script file is uploaded)", fileName, line));
                    else
                    {
                        if (name.EndsWith(".dll", StringComparison.OrdinalIgnoreCase)) name = name.Substring(0, name.Length - 4);
                        References.Add(new AssemblyReference { Name = name, Line = line });
                    }
                    continue;
                }
                if (word == "define" || word == "undef")
                {
                    // The evaluator puts a token of its own before every input, so a
                    // #define there is always "after the first token" (CS1032): the
                    // symbols are given to the compiler settings instead.
                    string symbol = arg.Split(new[] { ' ', '\t', '/' }, 2)[0];
                    if (word == "define") DefinedSymbols.Add(symbol); else DefinedSymbols.Remove(symbol);
                    continue;
                }
                // Any other directive (#if, #elif, #else, #endif, #pragma, #error,
                // #warning...) inside a declaration or statement travels with it; one at
                // top level goes into every input, so that #if regions stay balanced.
                ItemKind? container = ContainerKind(d.Start);
                if (container == null) shared.Add(d);
            }
        }

        static string Unquote(string arg)
        {
            arg = arg.Trim();
            if (arg.Length >= 2 && arg[0] == '"' && arg.IndexOf('"', 1) > 0)
                return arg.Substring(1, arg.IndexOf('"', 1) - 1).Trim();
            return null;
        }

        // ---- chunks ----------------------------------------------------------------

        // The kind of the declaration or statement containing offset, if any.
        ItemKind? ContainerKind(int offset)
        {
            foreach (var it in items)
                if (it.Start <= offset && offset < it.End) return it.Kind;
            return null;
        }

        // Textual: an await may sit in an interpolated string's hole.
        bool HasAwait(Item it)
        {
            return src.IndexOf("await", it.Start, it.End - it.Start, StringComparison.Ordinal) >= 0;
        }

        // The source with everything blanked out (line breaks kept) but the items
        // for which keep is true and the top-level directives.
        string Render(Predicate<Item> keep)
        {
            var buf = new char[src.Length];
            for (int k = 0; k < buf.Length; k++) buf[k] = src[k] == '\n' || src[k] == '\r' ? src[k] : ' ';
            foreach (var d in shared)
                for (int k = d.Start; k < d.End; k++) buf[k] = src[k];
            foreach (var it in items)
            {
                if (!keep(it)) continue;
                for (int k = it.Start; k < it.End; k++) buf[k] = src[k];
                if (it.Kind == ItemKind.Statement) BlankDroppedModifiers(buf, it.Start, it.End, 0);
            }
            return new string(buf);
        }

        void BlankDroppedModifiers(char[] buf, int start, int end, int bufOffset)
        {
            foreach (var b in blanked)
                if (b.Key >= start && b.Key < end)
                    for (int k = b.Key; k < b.Value; k++) buf[k - bufOffset] = ' ';
        }

        // All items of a kind in one input (null when there is none).
        public string ChunkText(ItemKind kind)
        {
            bool any = false;
            foreach (var it in items) if (it.Kind == kind) { any = true; break; }
            return any ? Render(it => it.Kind == kind) : null;
        }

        // One statement, at its line and column + 1 line: line breaks and spaces before it
        // (the whole blanked file when there are top-level directives to keep). The
        // `;` on a line after it keeps an input whole when #if leaves no code in it
        // (the evaluator takes an empty input as unfinished), and ends a trailing
        // expression without `;` as Roslyn's script syntax allows.
        string StatementText(Item item)
        {
            if (shared.Count > 0) return "\n" + Render(it => it == item) + "\n;";
            int line = LineOf(item.Start);
            int col = item.Start - lineStarts[line - 1];
            var buf = new char[item.End - item.Start];
            src.CopyTo(item.Start, buf, 0, buf.Length);
            BlankDroppedModifiers(buf, item.Start, item.End, item.Start);
            return new string('\n', line) + new string(' ', col) + new string(buf) + "\n;";
        }

        // The type chunk: all top-level types, those without an access modifier made
        // `public` (the evaluator's variables are public fields: an internal type
        // there is CS0052, "inconsistent accessibility").
        public string TypeChunkText(out List<Shift> shifts)
        {
            return WithModifiers(ItemKind.Type, "\n", "", out shifts);
        }

        public string UsingChunkText()
        {
            string text = ChunkText(ItemKind.Using);
            return text == null ? null : "\n" + text;
        }

        // The method chunk: one class, `public class Host : Base {` on a line of its
        // own, then the source with only the methods kept, each made `public static`
        // (a `private` becomes `public`: the class is used through `using static`),
        // then `}`.
        public string MethodChunkText(string hostName, string baseName, out List<Shift> shifts)
        {
            return WithModifiers(ItemKind.Method, "public class " + hostName + " : " + baseName + " {\n", "\n}\n", out shifts);
        }

        // ChunkText(kind) with modifiers inserted before each item's first modifier
        // (after its attributes); the shifts describe them for the error positions.
        string WithModifiers(ItemKind kind, string header, string trailer, out List<Shift> shifts)
        {
            shifts = new List<Shift>();
            string text = ChunkText(kind);
            if (text == null) return null;
            var sb = new StringBuilder(header);
            int copied = 0;
            foreach (var it in items)
            {
                if (it.Kind != kind) continue;
                int j = SkipAttributes(it.FirstToken);
                if (Is(j, "namespace")) continue;
                int insertAt = tokens[j].Start;
                bool hasStatic = false, hasAccess = false;
                int privateAt = -1;
                for (int m = j; IsModifier(m); m++)
                {
                    if (tokens[m].Text == "static") hasStatic = true;
                    if (tokens[m].Text == "private") privateAt = tokens[m].Start;
                    else if (AccessModifiers.Contains(tokens[m].Text)) hasAccess = true;
                }
                string insert = "";
                if (!hasAccess && privateAt < 0) insert += "public ";
                if (kind == ItemKind.Method && !hasStatic) insert += "static ";
                sb.Append(text, copied, insertAt - copied);
                copied = insertAt;
                if (insert.Length > 0)
                {
                    sb.Append(insert);
                    int line = LineOf(insertAt);
                    shifts.Add(new Shift { Line = line, Column = insertAt - lineStarts[line - 1] + 1, Length = insert.Length });
                }
                if (kind == ItemKind.Method && privateAt >= 0 && !hasAccess)
                {
                    sb.Append(text, copied, privateAt - copied);
                    sb.Append("public "); // same length as "private"
                    copied = privateAt + "private".Length;
                }
            }
            sb.Append(text, copied, text.Length - copied);
            sb.Append(trailer);
            return sb.ToString();
        }
    }
}
