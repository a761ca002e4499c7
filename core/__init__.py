"""What every layer uses: the settings schema, histograms, small helpers. Imports nothing of spikewire."""
