from noisystudent.cli import main

raise SystemExit(main())
