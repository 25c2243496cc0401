import sys

from ahcl.cli import main

sys.exit(main())
