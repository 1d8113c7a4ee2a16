"""`python -m edrs_task` starts the task service."""

from edrs_core import run_service

from edrs_task.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
