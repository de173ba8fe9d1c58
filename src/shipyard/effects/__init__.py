"""Side effects at the edge: git, subprocesses, probes, secret sources, artifacts, migrations."""
