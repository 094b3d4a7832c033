"""``python -m shan.toyworld``: generate toy-world splits (see :mod:`shan.toyworld.dataset`)."""

from shan.toyworld.dataset import main

raise SystemExit(main())
