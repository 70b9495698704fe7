"""Data: image datasets, dense (segmentation, depth) datasets and box annotations."""
