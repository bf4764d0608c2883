from harness.cli.main import entrypoint

entrypoint()
