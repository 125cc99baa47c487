"""Names of the score-based recommender families (the config's `family`), in a module without torch:
config.py reads them when the Snakefile builds the DAG. baselines/registry.py maps each name to its class
and refuses to import when the two disagree, so this tuple is the one list of families."""

RECOMMENDER_FAMILIES = ("alpharec", "caser", "gru4rec", "mostpop", "sasrec")
