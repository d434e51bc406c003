echo "Waiting 1 second"
sleep 1
echo "Done waiting"
