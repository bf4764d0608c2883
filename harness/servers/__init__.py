"""Local HTTP servers for tests and benchmarks: an OpenAI-compatible logprob server and a fault proxy."""
