"""Test helpers that ship with the package: a generator of hostile media files."""
from .hostile import HostileCorpus, HostileFile, crafted_wav, make_hostile_corpus, png_bytes

__all__ = ["HostileCorpus", "HostileFile", "make_hostile_corpus", "crafted_wav", "png_bytes"]
