"""AI Service: shared infrastructure that owns the lifecycle of AI jobs."""
