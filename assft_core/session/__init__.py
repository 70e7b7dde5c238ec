"""The session engine: project store, active-learning rounds, labels and background jobs.

    project.py   create_project / open_project / import_dataset_into (a folder: project.sqlite + artifacts/)
    store.py     SQLite (WAL) connections, transactions, ordered schema migrations, events
    rounds.py    round state machine: open → scored → proposed → approved → labelled → trained → evaluated
    query.py     the round's proposals and swaps from a registered strategy over stored scores
    labels.py    expert uploads (validated, versioned, content-hashed) and the oracle (demo mode)
    jobs.py      job-kind registry, submit / launch_detached / run / cancel / reap dead / resume
    runner.py    `python -m assft_core.session.runner --project DIR JOB_ID` (a detached job's process)
    paths.py     sanitised names, paths kept inside the project, temp-then-rename writes
    commands.py  `assft init | import | status | query | approve | reject | swap | label | job ...`

Every function opens its own short-lived connection, so any thread (Streamlit sessions) or
process (detached jobs) can call it.
"""
