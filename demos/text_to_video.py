"""Type words, get video players that start at the matching window, with the window shown.

    python demos/text_to_video.py --index media.mmr   (no --index: the synthetic sample corpus)
"""
import sys

import mmretrieve.demo

if __name__ == "__main__":
    sys.exit(mmretrieve.demo.main(tabs=["text-video", "index"], title="mmretrieve — text to video", prog="demos/text_to_video.py"))
