"""Entry point of `make demo` (python -m demo)."""

from demo.run import main

raise SystemExit(main())
