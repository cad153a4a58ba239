"""`chaospika run`: experiments in a row, each into results/YYYYMMDD_HHMMSS/<experiment>/."""
