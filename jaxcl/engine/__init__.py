"""jaxcl's engine: sweep grids, batching and sharding, the run directory, checkpoints, the
command line and report assembly. It knows experiments only through `protocol`."""
