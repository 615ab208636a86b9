# The conformance kit's fixtures: credgate's pytest plugin is opt-in.
pytest_plugins = ["credgate.adapters.testing"]
