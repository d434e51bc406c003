// Echoes every line of standard input; with empty stdin it prints nothing.
string line;
while ((line = Console.ReadLine()) != null)
{
    Console.WriteLine(line);
}
