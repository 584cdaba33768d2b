"""``python -m helpers.data convert|check|check-foodieqa ...`` (see :mod:`helpers.data.llava`)."""
import sys

from helpers.data.llava import main

sys.exit(main())
