"""`python -m edrs_knowledge` starts the knowledge service."""

from edrs_core import run_service

from edrs_knowledge.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
