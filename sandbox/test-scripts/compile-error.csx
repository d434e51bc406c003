// Line 4 does not compile: error CS0029 at main.csx(4,13).
var greeting = "Hello";

int count = greeting;
Console.WriteLine(count);
