"""`python -m edrs_research` starts the research service."""

from edrs_core import run_service

from edrs_research.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
