import sys

from zhcls.cli import main

sys.exit(main())
