"""Helpers the test files share: sites, job rows, Slurm call logs, the test hub, Blackfish's schema."""
