"""The `shipyard` command line: thin Typer commands over the service layer."""
