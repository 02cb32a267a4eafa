"""The kdflow pipeline, its presets and the `kdflow` command line."""
