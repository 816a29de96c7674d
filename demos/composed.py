"""Upload a reference image or clip, type the change, set the text weight, see the results.

    python demos/composed.py --index media.mmr   (no --index: the synthetic sample corpus)
"""
import sys

import mmretrieve.demo

if __name__ == "__main__":
    sys.exit(mmretrieve.demo.main(tabs=["composed", "index"], title="mmretrieve — composed queries", prog="demos/composed.py"))
