// Splits the tokens of a .csx at top level into using directives, type
// declarations, top-level methods and statements, and reads its directives.

using System;
using System.Collections.Generic;

namespace Dsw
{
    enum ItemKind { Using, Type, Method, Statement }

    sealed class Item
    {
        public ItemKind Kind;
        public int Start, End;       // source offsets, End exclusive
        public int FirstToken;       // token index of the first token
        public int LastToken;
    }

    sealed class AssemblyReference
    {
        public string Name;
        public int Line;
    }

    sealed partial class CsxScript
    {
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
    }
}
