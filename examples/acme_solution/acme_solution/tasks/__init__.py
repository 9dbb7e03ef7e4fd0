"""Background tasks of the acme solution."""
