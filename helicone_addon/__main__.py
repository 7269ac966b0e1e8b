import sys

from helicone_addon.cli import main

sys.exit(main())
