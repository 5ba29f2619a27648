from tfnorm.cli import main

raise SystemExit(main())
