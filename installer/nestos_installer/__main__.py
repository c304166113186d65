"""`python -m nestos_installer`: the same as the console script."""

from nestos_installer.cli import main

main()
