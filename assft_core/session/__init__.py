"""The session engine: project store, active-learning rounds, labels and background jobs.

    project.py   create_project / open_project / import_dataset_into (a folder: project.sqlite + artifacts/)
    store.py     SQLite (WAL) connections, transactions, ordered schema migrations, events
    rounds.py    round state machine: open → scored → proposed → approved → labelled → trained → evaluated
    query.py     the round's proposals and swaps from a registered strategy over stored scores
    labels.py    expert uploads (validated, versioned, content-hashed) and the oracle (demo mode)
    jobs.py      job-kind registry, submit / launch_detached / run / cancel / reap dead / resume
    job_kinds.py the round's job kinds "score", "train", "evaluate" (registered when jobs.py needs them)
    runner.py    `python -m assft_core.session.runner --project DIR JOB_ID` (a detached job's process)
    paths.py     sanitised names and paths kept inside the project (writes: assft_core.fsutil)
    commands.py  `assft init | import | status | query | approve | reject | swap | label | job ...`
    workspace.py where a round's models, caches and settings live (f_0, f_t, preprocessing cache)
    scoring_round.py  the "score" job: f_0 (cached) and f_t over pool and test cases → query table
    training_round.py the "train" job: supervised + SSFT (train.ssft), save f_{t+1}, evaluate
    evaluation.py     test-split evaluation of a round's model (native grid), biased fallback
    loop.py      `run_rounds`: the one headless loop (demo run, benchmarks) through the same jobs
    progress.py  progress sinks and the per-step log the dashboard's loss curve reads
    demo_setup.py     `assft demo project` / `demo run`: the demo corpus + shipped model project
    demo_commands.py  the `assft demo` group: `build` (from data.demo), `project`, `run`
    round_commands.py `assft score | train | evaluate | export`
    views.py     read model of the Embedding and Viewer pages: scores, case table, one case's overlays

Every function opens its own short-lived connection, so any thread (Streamlit sessions) or
process (detached jobs) can call it.
"""
