"""Data: synthetic corpus, dataset readers."""
