echo "Exiting with code 3"
exit 3
