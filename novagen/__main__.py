"""`python -m novagen`: the same command line as `novagen`."""

from novagen.cli import main

main()
