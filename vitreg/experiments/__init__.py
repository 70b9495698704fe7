"""Experiments: what each notebook does, with what and at what size, defined once."""
