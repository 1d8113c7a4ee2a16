"""`python -m edrs_memory` starts the memory service."""

from edrs_core import run_service

from edrs_memory.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
