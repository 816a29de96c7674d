"""Type words, get audio players for the matching windows with their timestamps.

    python demos/text_to_audio.py --index media.mmr   (no --index: the synthetic sample corpus)
"""
import sys

import mmretrieve.demo

if __name__ == "__main__":
    sys.exit(mmretrieve.demo.main(tabs=["text-audio", "index"], title="mmretrieve — text to audio", prog="demos/text_to_audio.py"))
