// The report of an unhandled exception: the script's frames with their main.csx
// lines, as dotnet-script shows them, without the runner's and evaluator's frames.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Reflection;
using System.Text;
using Mono.CSharp;

namespace Dsw
{
    static class StackTraces
    {
        const BindingFlags Private = BindingFlags.Instance | BindingFlags.NonPublic;
        const string EndOfRethrownTrace = "--- End of stack trace from previous location where exception was thrown ---";
        const string EndOfInnerTrace = "   --- End of inner exception stack trace ---";

        // Exception.ToString() prints this string, when set, instead of the trace the
        // runtime recorded: so each exception's own ToString (inner exceptions, an
        // AggregateException's list, a FileNotFoundException's file name, a script's
        // override) stays as it is, with frames of ours.
        static readonly FieldInfo StackTraceString = typeof(Exception).GetField("_stackTraceString", Private);
        // The traces an exception was rethrown from (await, ExceptionDispatchInfo).
        static readonly FieldInfo CapturedTraces = typeof(StackTrace).GetField("captured_traces", Private);
        // Set for Mono's wrapper frames ("(wrapper remoting-invoke-with-check) ..."),
        // which repeat the frame below them.
        static readonly FieldInfo InternalMethodName = typeof(StackFrame).GetField("internalMethodName", Private);

        // "<type>: <message>" and the stack, as Exception.ToString() has them.
        public static string Describe(Exception e, LineNumbers lines, string fileName)
        {
            while (e is TargetInvocationException && e.InnerException != null) e = e.InnerException;
            if (StackTraceString != null)
            {
                try
                {
                    foreach (var ex in ExceptionTree(e)) SetFrames(ex, lines, fileName);
                }
                catch (Exception)
                {
                    // The runtime's frames, then, for what is left.
                }
            }
            string text;
            try
            {
                text = e.ToString();
            }
            catch (Exception)
            {
                // Mono's own formatting fails on some frames of dynamic generic types.
                text = e.GetType() + ": " + e.Message;
            }
            return Tidy(text);
        }

        static List<Exception> ExceptionTree(Exception e)
        {
            var all = new List<Exception>();
            var pending = new Stack<Exception>();
            pending.Push(e);
            while (pending.Count > 0)
            {
                var ex = pending.Pop();
                if (ex == null || all.Contains(ex)) continue;
                all.Add(ex);
                pending.Push(ex.InnerException);
                var aggregate = ex as AggregateException;
                if (aggregate != null) foreach (var inner in aggregate.InnerExceptions) pending.Push(inner);
            }
            return all;
        }

        static void SetFrames(Exception ex, LineNumbers lines, string fileName)
        {
            var trace = new StackTrace(ex, false);
            var traces = new List<StackFrame[]>();
            var captured = CapturedTraces == null ? null : CapturedTraces.GetValue(trace) as StackTrace[];
            if (captured != null) foreach (var c in captured) traces.Add(c.GetFrames() ?? new StackFrame[0]);
            traces.Add(trace.GetFrames() ?? new StackFrame[0]);
            if (traces[traces.Count - 1].Length == 0) return; // never thrown: no trace to replace
            var segments = Segments(traces);

            var text = new StringBuilder();
            for (int k = 0; k < segments.Count; k++)
            {
                bool rethrow = k == segments.Count - 1 && k > 0;
                List<StackFrame> shown = Shown(segments[k], rethrow);
                if (shown.Count == 0) continue;
                if (text.Length > 0) text.Append(Environment.NewLine).Append(EndOfRethrownTrace);
                foreach (var frame in shown)
                {
                    if (text.Length > 0) text.Append(Environment.NewLine);
                    text.Append(FrameText(frame, lines, fileName));
                }
            }
            StackTraceString.SetValue(ex, text.ToString());
        }

        // Each trace Mono keeps holds the frames of the traces before it, then its own
        // (from where the exception was rethrown): the own frames of each.
        static List<StackFrame[]> Segments(List<StackFrame[]> traces)
        {
            var segments = new List<StackFrame[]>();
            StackFrame[] before = new StackFrame[0];
            foreach (var frames in traces)
            {
                int skip = StartsWith(frames, before) ? before.Length : 0;
                var own = new StackFrame[frames.Length - skip];
                Array.Copy(frames, skip, own, 0, own.Length);
                segments.Add(own);
                before = frames;
            }
            return segments;
        }

        static bool StartsWith(StackFrame[] frames, StackFrame[] prefix)
        {
            if (prefix.Length > frames.Length) return false;
            for (int k = 0; k < prefix.Length; k++)
                if (frames[k].GetMethod() != prefix[k].GetMethod() || frames[k].GetILOffset() != prefix[k].GetILOffset())
                    return false;
            return true;
        }

        // The frames of one trace a script author can use: none of the runner's or the
        // evaluator's, nothing below the script's outermost frame (how the runner
        // called it), and a rethrow's own frames only where they hold script code.
        static List<StackFrame> Shown(StackFrame[] segment, bool rethrow)
        {
            var shown = new List<StackFrame>();
            int outermostScript = -1;
            foreach (var frame in segment)
            {
                var method = frame.GetMethod();
                if (method == null || IsPlumbing(frame, method)) continue;
                if (LineNumbers.IsScript(method)) outermostScript = shown.Count;
                shown.Add(frame);
            }
            if (outermostScript >= 0) shown.RemoveRange(outermostScript + 1, shown.Count - outermostScript - 1);
            else if (rethrow) shown.Clear();
            return shown;
        }

        static bool IsPlumbing(StackFrame frame, MethodBase method)
        {
            var assembly = method.Module.Assembly;
            if (assembly == typeof(StackTraces).Assembly || assembly == typeof(Evaluator).Assembly) return true;
            if (InternalMethodName != null && InternalMethodName.GetValue(frame) != null) return true;
            var type = method.DeclaringType;
            string name = type == null ? "" : type.FullName ?? type.Name;
            // How an awaited exception is rethrown (.NET hides these frames too).
            return name.StartsWith("System.Runtime.CompilerServices.TaskAwaiter", StringComparison.Ordinal)
                || name.StartsWith("System.Runtime.CompilerServices.ConfiguredTaskAwaitable", StringComparison.Ordinal)
                || name.StartsWith("System.Runtime.ExceptionServices.ExceptionDispatchInfo", StringComparison.Ordinal);
        }

        static string FrameText(StackFrame frame, LineNumbers lines, string fileName)
        {
            var method = frame.GetMethod();
            try
            {
                if (!LineNumbers.IsScript(method)) return "   at " + FrameworkName(method);
                int line = lines == null ? 0 : lines.LineOf(method, frame.GetILOffset());
                string where = line > 0 ? string.Format(" in {0}:line {1}", fileName, line) : "";
                return "   at " + ScriptName(method) + where;
            }
            catch (Exception)
            {
                return "   at " + method.Name;
            }
        }

        // A script method as its author wrote it: `Calc.Divide(Int32 a, Int32 b)`,
        // `Fail(Int32 n)` for a top-level method, `<top-level>` for a top-level
        // statement, `Calc.Sum.lambda(Int32 x)` for a lambda, `Step()` for the state
        // machine of an async method or an iterator.
        static string ScriptName(MethodBase method)
        {
            Type type = method.DeclaringType;
            string name = method.Name;
            ParameterInfo[] parameters = method.GetParameters();
            bool lambda = false;
            if (IsGenerated(type.Name) && type.DeclaringType != null)
            {
                // A state machine or a closure class: its owner method names the frame.
                string owner = Unwrap(type.Name);
                type = type.DeclaringType;
                if (name == "MoveNext")
                {
                    name = owner;
                    var original = OnlyMethodNamed(type, owner);
                    parameters = original == null ? null : original.GetParameters();
                }
                else
                {
                    lambda = true;
                    string inner = Unwrap(name);
                    name = inner.Length > 0 && inner != name ? inner : owner;
                }
            }
            else if (IsGenerated(name))
            {
                lambda = true;
                name = Unwrap(name);
            }

            var text = new StringBuilder();
            if (type.Name == "<InteractiveExpressionClass>")
                text.Append("<top-level>");
            else
            {
                text.Append(TypePath(type));
                if (text.Length > 0) text.Append('.');
                text.Append(name);
            }
            if (lambda) text.Append(".lambda");
            if (lambda || type.Name != "<InteractiveExpressionClass>") AppendParameters(text, parameters);
            return text.ToString();
        }

        static bool IsGenerated(string name)
        {
            return name.StartsWith("<", StringComparison.Ordinal);
        }

        // "<Step>c__async0" -> "Step", "<<Main>m__0>m__1" -> "Main", "<>m__0" -> "".
        static string Unwrap(string name)
        {
            while (name.StartsWith("<", StringComparison.Ordinal))
            {
                int depth = 0, close = -1;
                for (int k = 0; k < name.Length && close < 0; k++)
                {
                    if (name[k] == '<') depth++;
                    else if (name[k] == '>' && --depth == 0) close = k;
                }
                if (close < 0) break;
                name = name.Substring(1, close - 1);
            }
            return name;
        }

        static MethodBase OnlyMethodNamed(Type type, string name)
        {
            MethodBase found = null;
            var all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static
                | BindingFlags.Instance | BindingFlags.DeclaredOnly;
            foreach (var method in type.GetMethods(all))
            {
                if (method.Name != name) continue;
                if (found != null) return null;
                found = method;
            }
            return found;
        }

        // Namespace and enclosing types, without the evaluator's classes around the
        // script's statements and top-level methods.
        static string TypePath(Type type)
        {
            var names = new List<string>();
            string ns = null;
            for (var t = type; t != null; t = t.DeclaringType)
            {
                if (!IsGenerated(t.Name) && t.Name != "__DswScript") names.Insert(0, t.Name);
                ns = t.Namespace;
            }
            if (!string.IsNullOrEmpty(ns)) names.Insert(0, ns);
            return string.Join(".", names);
        }

        static string FrameworkName(MethodBase method)
        {
            var text = new StringBuilder();
            var type = method.DeclaringType;
            if (type != null)
            {
                if (type.IsGenericType && !type.IsGenericTypeDefinition) type = type.GetGenericTypeDefinition();
                text.Append((type.FullName ?? type.Name).Replace('+', '.')).Append('.');
            }
            text.Append(method.Name);
            if (method.IsGenericMethod)
            {
                var definition = ((MethodInfo)method).GetGenericMethodDefinition();
                var names = new List<string>();
                foreach (var argument in definition.GetGenericArguments()) names.Add(argument.Name);
                text.Append('[').Append(string.Join(",", names)).Append(']');
            }
            AppendParameters(text, method.GetParameters());
            return text.ToString();
        }

        static void AppendParameters(StringBuilder text, ParameterInfo[] parameters)
        {
            text.Append('(');
            if (parameters != null)
            {
                for (int k = 0; k < parameters.Length; k++)
                {
                    if (k > 0) text.Append(", ");
                    text.Append(parameters[k].ParameterType.Name);
                    if (!string.IsNullOrEmpty(parameters[k].Name)) text.Append(' ').Append(parameters[k].Name);
                }
            }
            text.Append(')');
        }

        // Line breaks as written to the console; no empty line where every frame of an
        // exception was left out, and none of the runtime's frames of the runner or the
        // evaluator where the frames could not be replaced.
        static string Tidy(string text)
        {
            var lines = new List<string>(text.Replace("\r\n", "\n").Split('\n'));
            for (int k = lines.Count - 1; k >= 1; k--)
            {
                string line = lines[k].Trim();
                bool empty = line.Length == 0;
                if ((empty && (k == lines.Count - 1 || lines[k + 1] == EndOfInnerTrace))
                    || line.StartsWith("at Dsw.", StringComparison.Ordinal)
                    || line.StartsWith("at Mono.CSharp.", StringComparison.Ordinal))
                    lines.RemoveAt(k);
            }
            return string.Join("\n", lines);
        }
    }
}
