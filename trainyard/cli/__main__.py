"""`python -m trainyard.cli`: the `trainyard` command without its console script."""

from trainyard.cli import main

main()
