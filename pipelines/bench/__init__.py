"""Benchmarks, run side by side in one command: `kdflow bench train` and `kdflow bench infer`."""
