"""Model files: the embedded default model and memoised content fingerprints of checkpoints."""
