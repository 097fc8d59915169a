"""`python -m agent ...` is the same as the `kgrow` command."""
from agent.cli import main

raise SystemExit(main())
