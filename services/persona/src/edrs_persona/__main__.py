"""`python -m edrs_persona` starts the persona service."""

from edrs_core import run_service

from edrs_persona.app import definition


def main() -> None:
    run_service(definition)


if __name__ == "__main__":
    main()
