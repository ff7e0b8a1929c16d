"""Rate limits: callers' (teams, keys, a team on one model) and providers' accounts (shared fairly by teams).

`base` holds the types and the one interface every limit store implements (in memory, SQLite for several workers
on one node, Redis for several nodes); `gcra` the algorithm; `callers` and `provider_queue` what the pipeline
calls.
"""
