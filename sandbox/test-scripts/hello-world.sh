echo "Hello from script"
