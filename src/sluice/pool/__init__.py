"""Engine-agnostic connection pooling."""
