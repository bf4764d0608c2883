"""RAG evaluation: the JSONL input (io), retrieval metrics, ragas-defined judged metrics, the run (run).

See docs/rag.md for the input format, every metric's definition and how they were checked.
"""
