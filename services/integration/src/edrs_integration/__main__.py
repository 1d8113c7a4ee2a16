"""`python -m edrs_integration` starts the integration service."""

from edrs_core import run_service

from edrs_integration.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
