"""The run machinery: a run directory on disk, checkpoints, the loop that drives the core's
Trainer through a run (start or resume, logs, evaluations, saves, signals), and what can
be read back from a run.

    hooks        Reporter: what the loop tells the loggers
    loop         train(): one run, start or resume, to its end
    resume       the one resume decision (run and plan)
    signals      SIGINT/SIGTERM: finish the step, save, stop
    smoke        a few steps saved, resumed and evaluated in a temporary directory
    checkpoint   the checkpoint format: save, pointers, prune, load, select
    npz          reading untrusted .npz files
    atomic       atomic writes; OS errors in words
    rundir       the run directory: lock, config, metrics, status
    tensorboard  TensorBoard scalars (a Reporter)
    runs_table   reading runs for `gdtrain runs`
    inspect_run  a run's checkpoint loaded and scored; watching a run

It imports core, data, config and gdtrain.errors, never the commands or the sweep.
"""
