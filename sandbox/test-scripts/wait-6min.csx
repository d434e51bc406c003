// Runs past the worker's time limit: the job must be stopped and reported as
// timed out, with the first line already in its output.
Console.WriteLine("Waiting 6 minutes");
await Task.Delay(TimeSpan.FromMinutes(6));
Console.WriteLine("Done waiting");
