Console.WriteLine("Exiting with code 3");
Environment.Exit(3);
