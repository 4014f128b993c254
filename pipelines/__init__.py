"""Thin stage scripts over the `subnets` library."""

from pathlib import Path

from subnets.threads import prefer_passive_wait

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
"""The paper recipes the stages find by name (`--recipe NAME`)."""

prefer_passive_wait()  # before anything loads torch's OpenMP runtime (see subnets/threads.py)
