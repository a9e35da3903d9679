from broker_bridge.main import main

raise SystemExit(main())
