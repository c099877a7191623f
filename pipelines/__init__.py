"""The KFP pipeline, its thin component wrappers, compile / local run, and the CLI."""
