"""Datasets, one module per problem; installed as `vqkeras.problems`."""
