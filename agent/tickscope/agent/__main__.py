from tickscope.agent.cli import main

raise SystemExit(main())
