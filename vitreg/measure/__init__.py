"""Measurements: the paper's findings (F1-F9) and the follow-ups, on any supported ViT."""
