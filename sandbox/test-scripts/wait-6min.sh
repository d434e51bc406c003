# Runs past the worker's time limit: the job must be stopped and reported as
# timed out, with the first line already in its output.
echo "Waiting 6 minutes"
sleep 360
echo "Done waiting"
