"""``runstream agent``: runs submitted scripts for one compute target (issue 10).

An agent talks to the API only over HTTP (the jobs contract: ``/v1/agents``…) with a
token, and logs each run's statuses, output and files through the SDK like any
producer. Modules, in the order a run meets them:

- ``service.py``  the process: registration, the one long-poll (heartbeat, new runs,
  cancels), slots, the lease rule, graceful stop; ``run_agent`` for the CLI.
- ``client.py``   the HTTP calls (aiohttp).
- ``lease.py``    when held runs must be killed because leases could not be renewed.
- ``runner.py``   one run: snapshot → environment → processes → statuses → the end.
- ``envs.py``     the run's Python: user-managed, or a cached virtualenv built with pip.
- ``spec.py``     what a submission's spec means here (argv, ranks, environment), pure.
- ``procs.py``    child processes: process groups that die with the agent, line reading.
- ``watchdog.py`` the helper process that kills a dead agent's process groups.

This ``__init__`` imports nothing, so ``python -m ingest.agent.watchdog`` starts fast.
"""
