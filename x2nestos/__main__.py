"""`python -m x2nestos` and the zipapp entry point."""

from x2nestos.cli import main

main()
