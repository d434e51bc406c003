// Renders the evaluator's inputs from the items of a .csx, each at its original
// line and column.

using System;
using System.Collections.Generic;
using System.Text;

namespace Dsw
{
    sealed class StatementInput
    {
        public string Input;   // the statement at its original line and column
        public bool HasAwait;  // compiled into an async method: wait for its Task
    }

    sealed partial class CsxScript
    {
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
