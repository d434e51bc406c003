// Prints the compiler's errors at their positions in main.csx.

using System;
using System.Collections.Generic;
using System.IO;
using Mono.CSharp;

namespace Dsw
{
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
}
