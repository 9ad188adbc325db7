"""The operator's verbs: what a study will cost before it is submitted, and where it
stands afterwards.

Owns the cost plan (`plan`: jobs, GPU-hours, wall time and disk per rule, against the
profile's time limits), the throughput model behind it (`workload`: tokens and FLOPs per
job from the study; `throughput` with its table ``throughput.yaml``: measured rates per
model shape and device, each with its provenance), and the status board (`status`: one
line per job from what Snakemake and Slurm already recorded, read by `dag` and `slurm`),
and `warm`: local jobs forked from one process that imported torch once.

May import: study and everything below it.
"""
