import sys

from llmbatch.bench.run import main

sys.exit(main())
