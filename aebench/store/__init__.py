"""The results store: job folders, atomic writes, done markers, results.csv."""
