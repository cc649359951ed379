"""Training: the step (task.py), the loop that drives it (loop.py), and what the loop needs:
optimiser and schedule, tower locks, exact-resume state, process groups, the run log."""
