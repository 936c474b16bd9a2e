"""Repository tools: notebook build, README and RESULTS generators, GPU runners (not part of the package)."""
