"""Network files, their validation, the supervisor that runs node processes, and the command line."""
