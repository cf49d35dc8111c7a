"""``python -m veylor``."""

from .cli import main

raise SystemExit(main())
