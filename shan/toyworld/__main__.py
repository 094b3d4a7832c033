"""``python -m shan.toyworld``: generate toy-world splits (see :mod:`shan.toyworld.dataset`)."""

from shan.toyworld.dataset import main

if __name__ == "__main__":  # importing the module (e.g. pkgutil.walk_packages) runs nothing
    raise SystemExit(main())
