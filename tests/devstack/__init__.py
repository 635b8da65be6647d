"""Tests of the dev stack (dev/stack): its broker and the chain it runs."""
