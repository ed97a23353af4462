"""`python -m cloud_gateway ...` is `tandem gateway ...`."""

from cloud_gateway.cli import main

raise SystemExit(main())
