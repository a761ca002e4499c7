"""A linear-drift memristor model for spikewire, added from outside through the Crossbar seam."""
