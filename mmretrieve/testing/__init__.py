"""Test helpers that ship with the package: a generator of hostile media files, peak memory."""
from .hostile import HostileCorpus, HostileFile, crafted_wav, make_hostile_corpus, png_bytes
from .memory import peak_rss_mb

__all__ = ["HostileCorpus", "HostileFile", "make_hostile_corpus", "crafted_wav", "png_bytes", "peak_rss_mb"]
