"""`python -m chaospika.report journal.json`: print the journal's summary."""

import sys

from chaospika.report.text import main

sys.exit(main())
