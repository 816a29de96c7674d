"""Type words, see the best matching images as a gallery with scores.

    python demos/text_to_image.py --index media.mmr   (no --index: the synthetic sample corpus)
"""
import sys

import mmretrieve.demo

if __name__ == "__main__":
    sys.exit(mmretrieve.demo.main(tabs=["text-image", "index"], title="mmretrieve — text to image", prog="demos/text_to_image.py"))
