"""``python -m tfnorm`` runs the command line."""

from tfnorm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
