"""`python -m oaml.cli.reference FOLDER`: write every reference page into FOLDER."""

import sys
from pathlib import Path

from oaml.cli.reference import write_pages

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m oaml.cli.reference FOLDER (docs/reference)")
    for path in write_pages(Path(sys.argv[1])):
        print(f"wrote {path}")
