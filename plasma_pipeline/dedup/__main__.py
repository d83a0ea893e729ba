import sys

from plasma_pipeline.dedup.cli import main

if __name__ == "__main__":
    sys.exit(main())
