"""Utilities: paths, atomic writes, the feature cache, results files, torchrun and progress bars."""
