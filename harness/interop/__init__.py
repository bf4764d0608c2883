"""Other tools' files in and out: lm-evaluation-harness 0.4 output directories (docs/lm-eval-interop.md)."""
