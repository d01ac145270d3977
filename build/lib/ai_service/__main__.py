import sys

from ai_service.cli import main

sys.exit(main())
