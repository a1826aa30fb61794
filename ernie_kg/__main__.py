"""``python -m ernie_kg`` is the ``ernie-kg`` command line (torchrun needs this form)."""

from ernie_kg.cli import main

if __name__ == "__main__":
    main()
