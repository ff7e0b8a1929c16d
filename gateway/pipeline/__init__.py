"""The one request pipeline every front door runs: validate, plan, admit, attempt, relay, settle, record."""
