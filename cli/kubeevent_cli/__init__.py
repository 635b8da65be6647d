"""kubeevent: lint and dry-run subscriptions and templates with the functions' own code."""

__version__ = "0.1.0"
