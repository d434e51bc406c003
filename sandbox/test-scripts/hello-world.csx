Console.WriteLine("Hello from script");
