"""`python -m novagen.backends.cuda --selftest --bench --ptxas`."""

import sys

from novagen.backends.cuda.check import main

sys.exit(main())
