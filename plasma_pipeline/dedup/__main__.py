import sys

from plasma_pipeline.dedup.cli import main

sys.exit(main())
