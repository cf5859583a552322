from batchsim.cli import main

raise SystemExit(main())
