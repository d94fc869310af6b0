"""Hyper-parameter sets, one module per model family; installed as `vqkeras.hparams`."""
