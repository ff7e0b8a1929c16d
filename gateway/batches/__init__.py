"""Batches (issue 16): OpenAI's files and batches, run on the providers' batch APIs under the team's policy and budget.

`files` keeps uploaded input files; `lines` reads and validates a file's lines; `planning` routes each line and
prices the batch (batch prices where a provider's batch API runs it); `service` creates, shows, lists and cancels
batches (what the HTTP endpoints and the CLI call); `runner` moves active batches forward on the node holding each
one's lease (provider jobs submitted and polled, lines settled into the ledger, interactive lines run through the
pipeline); `render` writes OpenAI's batch and file objects and the output and error files.
"""
