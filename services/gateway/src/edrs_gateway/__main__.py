"""`python -m edrs_gateway` starts the gateway service."""

from edrs_core import run_service

from edrs_gateway.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
