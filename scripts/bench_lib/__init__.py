"""Benchmark harness for deployer (run through scripts/bench)."""
