# Echoes every line of standard input; with empty stdin it prints nothing.
while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line"
done
