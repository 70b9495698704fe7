"""Core: models and their weights, the token layout, hooks, image preparation and the batching stream."""
