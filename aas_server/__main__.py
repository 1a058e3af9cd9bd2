from aas_server.cli import main

raise SystemExit(main())
