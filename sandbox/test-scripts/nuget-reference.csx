#r "nuget: Newtonsoft.Json, 13.0.3"

using Newtonsoft.Json;

var json = JsonConvert.SerializeObject(new { Message = "Hello from Newtonsoft.Json" });
Console.WriteLine(json);
