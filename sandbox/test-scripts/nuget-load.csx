#load "nuget: simple-targets-csx, 6.0.0"

using static SimpleTargets;

var targets = new TargetDictionary();
targets.Add("default", () => Console.WriteLine("Hello from simple-targets"));
Run(Args, targets);
