"""Pieces of the training protocol; `salt.train` puts them together into one run."""
