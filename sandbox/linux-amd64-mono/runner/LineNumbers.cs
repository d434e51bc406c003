// main.csx line numbers for the methods the evaluator compiled, from the mcs
// debug information it does not emit by itself.

using System;
using System.Collections.Generic;
using System.Reflection;
using System.Reflection.Emit;
using Mono.CompilerServices.SymbolWriter;
using Mono.CSharp;

namespace Dsw
{
    // Why this reaches into Mono.CSharp: the evaluator compiles every input into a
    // dynamic assembly of its own and never gives it a symbol writer, so mcs records
    // no sequence points (CompilerSettings.GenerateDebugInfo only matters to
    // AssemblyDefinition.Emit, which the evaluator does not call), and the runtime
    // knows no lines for dynamic methods anyway. What the runner does instead:
    //   - the evaluator's source file becomes a ScriptSourceFile, whose Module getter
    //     (called by every member it holds, from the moment an input's assembly
    //     exists) gives that assembly a MonoSymbolFile, so mcs keeps sequence points
    //     in each method it emits, and a CompiledTypes importer, told by mcs of every
    //     type it creates (the statement hosts included, which nothing else keeps);
    //   - when an exception is reported, each recorded type writes its methods'
    //     sequence points (IL offset -> input line) into a MonoSymbolFile of ours,
    //     and a frame's line is that of the last point at or before its IL offset
    //     (Mono's IL offset of a frame; of a caller frame it may be a little off,
    //     e.g. the loop body instead of the foreach line for a MoveNext call).
    // Every input holds its code one line below its line in main.csx (see
    // Compiler.cs), so main.csx line = input line - 1. Pinned to the private fields
    // of Debian's Mono 6.8: if any is missing, Attach leaves the evaluator alone and
    // frames get no line.
    sealed class LineNumbers
    {
        const BindingFlags Private = BindingFlags.Instance | BindingFlags.NonPublic;

        static readonly FieldInfo EvaluatorModule = typeof(Evaluator).GetField("module", Private);
        static readonly FieldInfo EvaluatorSourceFile = typeof(Evaluator).GetField("source_file", Private);
        static readonly FieldInfo Containers = typeof(TypeContainer).GetField("containers", Private);
        static readonly FieldInfo SymbolWriter = typeof(AssemblyDefinition).GetField("symbol_writer", Private);
        static readonly FieldInfo SymbolFileMethods = typeof(MonoSymbolFile).GetField("methods", Private);

        readonly CompiledTypes compiled;
        int harvested; // compiled.Types[0 .. harvested) are in lines
        // assembly full name -> method token -> sequence points
        readonly Dictionary<string, Dictionary<int, LineNumberEntry[]>> lines =
            new Dictionary<string, Dictionary<int, LineNumberEntry[]>>();

        LineNumbers(CompiledTypes compiled)
        {
            this.compiled = compiled;
        }

        // Installs the hooks in an evaluator that has compiled nothing yet; null when
        // this Mono.CSharp is not the one they were written for.
        public static LineNumbers Attach(Evaluator evaluator, CompilerContext context, string fileName)
        {
            if (EvaluatorModule == null || EvaluatorSourceFile == null || Containers == null
                || SymbolWriter == null || SymbolFileMethods == null)
                return null;
            try
            {
                var module = (ModuleContainer)EvaluatorModule.GetValue(evaluator);
                var original = (CompilationSourceFile)EvaluatorSourceFile.GetValue(evaluator);
                var containers = (List<TypeContainer>)Containers.GetValue(module);
                int at = containers.IndexOf(original);
                if (at < 0) return null;
                // Sequence points need a source file behind the tokens' locations
                // (the evaluator's has none): one named after the script.
                var file = new SourceFile(fileName, fileName, context.SourceFiles.Count + 1);
                context.SourceFiles.Add(file);
                var compiled = new CompiledTypes(module);
                var replacement = new ScriptSourceFile(module, file, compiled);
                EvaluatorSourceFile.SetValue(evaluator, replacement);
                containers[at] = replacement;
                return new LineNumbers(compiled);
            }
            catch (Exception)
            {
                return null;
            }
        }

        // Whether the method was compiled from the script by the evaluator.
        public static bool IsScript(MethodBase method)
        {
            var assembly = method.Module.Assembly;
            return assembly.IsDynamic && assembly.GetName().Name.StartsWith("eval-", StringComparison.Ordinal);
        }

        // The main.csx line of a frame of a script method, 0 when unknown.
        public int LineOf(MethodBase method, int ilOffset)
        {
            if (ilOffset < 0) return 0;
            Harvest();
            Dictionary<int, LineNumberEntry[]> methods;
            LineNumberEntry[] points;
            if (!lines.TryGetValue(method.Module.Assembly.FullName, out methods)
                || !methods.TryGetValue(method.MetadataToken, out points))
                return 0;
            int row = 0;
            foreach (var point in points)
                if (!point.IsHidden && point.Offset <= ilOffset) row = point.Row;
            return Math.Max(0, row - 1);
        }

        void Harvest()
        {
            for (; harvested < compiled.Types.Count; harvested++)
            {
                var type = compiled.Types[harvested];
                try
                {
                    var symbols = new MonoSymbolFile();
                    type.WriteDebugSymbol(symbols);
                    string assembly = type.TypeBuilder.Assembly.FullName;
                    Dictionary<int, LineNumberEntry[]> methods;
                    if (!lines.TryGetValue(assembly, out methods))
                        lines[assembly] = methods = new Dictionary<int, LineNumberEntry[]>();
                    foreach (var entry in (List<MethodEntry>)SymbolFileMethods.GetValue(symbols))
                        methods[entry.Token] = entry.GetLineNumberTable().LineNumbers;
                    // mcs marks no point in an expression-bodied method (`int F() => ...;`):
                    // the line of its declaration, then.
                    foreach (var member in type.Members)
                    {
                        var method = member as MethodOrOperator;
                        if (method == null || method.MethodBuilder == null || member.Location.IsNull) continue;
                        int token = method.MethodBuilder.GetToken().Token;
                        LineNumberEntry[] points;
                        if (!methods.TryGetValue(token, out points) || points.Length == 0)
                            methods[token] = new[] { new LineNumberEntry(0, member.Location.Row, 0) };
                    }
                }
                catch (Exception)
                {
                    // A type whose symbols cannot be written: its frames get no line.
                }
            }
        }

        // The evaluator's source file, the parent of everything compiled from the script.
        sealed class ScriptSourceFile : CompilationSourceFile
        {
            readonly CompiledTypes compiled;
            AssemblyDefinition prepared;

            public ScriptSourceFile(ModuleContainer module, SourceFile file, CompiledTypes compiled)
                : base(module, file)
            {
                this.compiled = compiled;
            }

            public override ModuleContainer Module
            {
                get
                {
                    var module = base.Module;
                    var assembly = module.DeclaringAssembly;
                    if (assembly != prepared && assembly != null)
                    {
                        prepared = assembly;
                        try
                        {
                            if (assembly.SymbolWriter == null) SymbolWriter.SetValue(assembly, new MonoSymbolFile());
                            if (assembly.Importer == null) assembly.Importer = compiled;
                        }
                        catch (Exception)
                        {
                            // No lines for this input; it compiles as it would without.
                        }
                    }
                    return module;
                }
            }
        }

        // Not an importer: the assembly's Importer is only told of the types mcs
        // creates (TypeDefinition.CreateTypeBuilder), and this one keeps them.
        sealed class CompiledTypes : MetadataImporter
        {
            public readonly List<TypeDefinition> Types = new List<TypeDefinition>();

            public CompiledTypes(ModuleContainer module) : base(module) { }

            public override void AddCompiledType(TypeBuilder builder, TypeSpec spec)
            {
                var type = spec.MemberDefinition as TypeDefinition;
                if (type != null) Types.Add(type);
            }

            protected override MemberKind DetermineKindFromBaseType(Type baseType)
            {
                throw new NotSupportedException();
            }

            protected override bool HasVolatileModifier(Type[] modifiers)
            {
                throw new NotSupportedException();
            }
        }
    }
}
