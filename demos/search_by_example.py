"""Upload an image, a clip or a sound; get results of any modality.

    python demos/search_by_example.py --index media.mmr   (no --index: the synthetic sample corpus)
"""
import sys

import mmretrieve.demo

if __name__ == "__main__":
    sys.exit(mmretrieve.demo.main(tabs=["example", "index"], title="mmretrieve — search by example", prog="demos/search_by_example.py"))
