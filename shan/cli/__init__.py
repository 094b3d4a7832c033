"""The command-line programs; the library modules they call hold no argument parsing.

* ``shan-train`` / ``python -m shan.cli.train`` (also ``torchrun -m shan.cli.train``) —
  :mod:`shan.cli.train`, training in :mod:`shan.train`;
* ``shan-eval`` / ``python -m shan.cli.evaluate`` — :mod:`shan.cli.evaluate`, metrics in
  :mod:`shan.evaluation`;
* ``shan-extract`` / ``python -m shan.cli.extract`` — :mod:`shan.cli.extract`, extraction in
  :mod:`shan.extract`.

Shared behaviour (:mod:`shan.cli.common`): every bad argument, refused config or unwritable path
ends with one line ``prog: error: ...`` and exit code 2; outputs are checked for writability before
the work starts and written through a temporary file and a rename.
"""
