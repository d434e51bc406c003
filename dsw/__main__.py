"""`python -m dsw` is the `dsw` command."""

from dsw.cli import main

raise SystemExit(main())
