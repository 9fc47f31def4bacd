"""Training: one loop (engine) for every method; methods are loss modules."""
