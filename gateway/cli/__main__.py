"""`python -m gateway.cli`: the `gateway` command."""

from gateway.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
