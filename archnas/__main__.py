from archnas.cli import main

raise SystemExit(main())
