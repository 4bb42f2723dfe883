"""`python -m tickscope`: the sidecar's command line."""

from tickscope.agent.cli import main

raise SystemExit(main())
