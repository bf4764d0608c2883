"""Serving benchmarks: time to first token, time per output token, throughput and goodput.

- `metrics`: pure functions over request timelines (definitions in docs/bench.md).
- `http`, `client`: a streaming OpenAI-compatible client that timestamps every read.
- `inprocess`: the same timelines from hf, gguf and vllm models in this process.
- `load`: fixed-concurrency and request-rate (Poisson / gamma) load, warm-up requests.
- `datasets`: random-token prompts, prompts from a registered task, ShareGPT files.
- `store`: bench tables in the results database; `runner`: one benchmark, end to end.
"""
