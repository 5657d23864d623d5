import sys

from restora.cli import main

sys.exit(main())
