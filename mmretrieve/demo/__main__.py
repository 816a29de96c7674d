"""python -m mmretrieve.demo [--index PATH] (same as ``mmretrieve demo``)."""
import sys

from .serve import main

sys.exit(main(prog="python -m mmretrieve.demo"))
