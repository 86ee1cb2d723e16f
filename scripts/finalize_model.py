"""Kept so the commands recorded in older model cards and results still run: ``geodiff model finalize``.

python scripts/finalize_model.py MODEL DATA [options]  ==  geodiff model finalize MODEL DATA [options]
"""

import sys

from geodiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["model", "finalize", *sys.argv[1:]]))
