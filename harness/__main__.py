from harness.cli import entrypoint

entrypoint()
