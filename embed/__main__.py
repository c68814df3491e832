import sys

from embed.cli import main

sys.exit(main())
