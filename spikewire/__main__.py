from spikewire.launch.cli import main

raise SystemExit(main())
