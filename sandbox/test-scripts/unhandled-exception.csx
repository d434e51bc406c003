Console.WriteLine("Before the exception");
throw new InvalidOperationException("Something went wrong");
