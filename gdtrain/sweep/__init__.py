"""Sweeps: many runs of one base config, varied by dotted key and repeated over seeds.

A trial is nothing but a run directory, runs/<sweep>/<trial>/, named from its
parameters; a sweep is a list of them. Running a sweep again runs what is not finished
(a killed driver, a lost node, a retried task: each trial resumes from its checkpoints
and ends bit-identical to an uninterrupted run), so no engine state is kept.

    spec      the sweep file: keys, types and problems with their lines (registries)
    trials    grid and random expansion, trial names, each trial's resolved config
    worker    one trial, run in whichever process a backend picks
    backends  in-process, a local process pool, and (ray_backend) Ray tasks
    halving   successive halving: budgets and who survives a rung
    driver    dispatch, results already on disk, Ctrl-C, halving rungs
    results   groups over seeds (mean ± std), sweep.csv and sweep.json
"""
