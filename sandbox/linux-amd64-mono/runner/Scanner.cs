// Scans a .csx into tokens: strings, verbatim and interpolated strings, char
// literals, comments and preprocessor lines, with (), [] and {} matched.

using System;
using System.Collections.Generic;

namespace Dsw
{
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

    sealed partial class CsxScript
    {
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
    }
}
