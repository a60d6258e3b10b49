"""`python -m harness ...` is `sweep ...` (for environments where the script is not on PATH)."""

from __future__ import annotations

from harness.cli import main

raise SystemExit(main())
