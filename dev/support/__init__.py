"""Event and object builders, the seed document and helpers to run the functions as processes."""
