"""`python -m jaxcl ...` is the `jaxcl` command."""

import sys

from jaxcl.engine.cli import main

sys.exit(main())
