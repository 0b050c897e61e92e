import sys

from qatcore.cli import main

sys.exit(main())
