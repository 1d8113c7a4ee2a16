"""`python -m edrs_reasoning` starts the reasoning service."""

from edrs_core import run_service

from edrs_reasoning.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
