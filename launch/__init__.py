"""The command line, the supervisor that runs node processes, and a node process's entry point."""
