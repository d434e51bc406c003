// A .csx source split into the inputs Mono's evaluator compiles.

using System.Collections.Generic;

namespace Dsw
{
    // One .csx source split into the evaluator's inputs: Scanner.cs makes its tokens,
    // Splitter.cs its top-level items, Chunks.cs the inputs.
    sealed partial class CsxScript
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
    }
}
