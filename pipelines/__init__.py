"""Thin stage scripts over the `subnets` library."""

from subnets.threads import prefer_passive_wait

prefer_passive_wait()  # before anything loads torch's OpenMP runtime (see subnets/threads.py)
