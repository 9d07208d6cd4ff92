"""The workstation side: the only user of the docker SDK (inspect, export, cache)."""
