"""The deployer testbed: a simulated GPU fleet (sshd + dockerd per network namespace) on this machine.

Standard library only, so `scripts/testbed` works before the project venv exists.
"""
