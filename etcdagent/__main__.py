"""Allow ``python -m etcdagent`` in images and venvs where the console script is not on PATH."""

from etcdagent.cli import main

if __name__ == "__main__":
    main()
