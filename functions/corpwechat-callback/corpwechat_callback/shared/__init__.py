"""Helpers shared by every kubeevent-enricher function.

This folder is the only place to edit them: ``python dev/vendor.py`` copies it
into each function's package, and a test fails when a copy drifts. Modules here
import each other relatively only, so every vendored copy is self-contained.
"""
