"""``python -m perfreview``: the CLI without the installed entry point (a copied tree, the device)."""

import sys

from perfreview.cli import main

sys.exit(main(sys.argv[1:]))
