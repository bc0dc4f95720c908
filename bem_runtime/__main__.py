"""`python -m bem_runtime ...` is the same as the `bem-runtime` command."""
import sys

from bem_runtime.cli import main

sys.exit(main())
