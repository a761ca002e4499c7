"""Network files and their validation, and the session folder (its one writer and one reader)."""
