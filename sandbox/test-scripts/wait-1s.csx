Console.WriteLine("Waiting 1 second");
await Task.Delay(TimeSpan.FromSeconds(1));
Console.WriteLine("Done waiting");
