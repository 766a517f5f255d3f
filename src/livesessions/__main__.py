from livesessions.cli import main

raise SystemExit(main())
