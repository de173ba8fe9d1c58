"""`python -m shipyard` is the `shipyard` command."""

from shipyard.cli.app import main

main()
