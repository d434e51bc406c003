// A bit of everything a .csx commonly holds; prints "All checks passed" at the end.
// Comments may hold braces: { { } and "quotes".
using System.Globalization;

/* A block comment with a brace: } */
var people = new List<Person>
{
    new Person("Ada", 36),
    new Person("Linus", 28),
};

if (people.Count > 1)
{
    Console.WriteLine("Several people");
}
else
{
    Console.WriteLine("One person");
}

var older = people.Where(p => p.Age > 30).Select(p => p.Name).ToList();
Console.WriteLine($"Older than 30: {string.Join(", ", older)} ({older.Count}) {{not a hole}}");
Console.WriteLine($"Mean age: {people.Average(p => p.Age).ToString("F1", CultureInfo.InvariantCulture)}");
var verbatim = @"C:\data\{braces}""quoted""";
Console.WriteLine(verbatim);
Console.WriteLine(Describe(people[0]) + ", square of 7 is " + Square(7));
await Task.Delay(10);
Console.WriteLine($"Answer: {await AnswerAsync()}");
Console.WriteLine("All checks passed");

int Square(int x)
{
    return x * x;
}

string Describe(Person p) => $"{p.Name} is {p.Age}";

async Task<int> AnswerAsync()
{
    await Task.Delay(10);
    return 42;
}

class Person
{
    public Person(string name, int age)
    {
        Name = name;
        Age = age;
    }

    public string Name { get; }
    public int Age { get; }
}
