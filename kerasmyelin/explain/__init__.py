"""Why the model said what it said: which slices, and where in them, moved one infant's estimate."""
