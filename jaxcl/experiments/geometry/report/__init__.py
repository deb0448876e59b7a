"""The geometry experiment's report, its last stage: it reads a run directory's plain files and
returns the sections of `jaxcl report` (jaxcl.engine.protocol.Section).

- sections: the report in order (the entry point): ρ*, trained against predicted, plain words.
- plots: its figures.
- beyond, rank, training: the answers past the paper's assumptions (SPEC §10).
- stats: the bars, labels, intervals and solves they share.
"""
