#!/usr/bin/env python
"""Django's command-line entry point.

A command that meets a backing service outage (database, cache, broker) prints one line naming
it and exits with status 2; `--traceback` shows the full traceback instead.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "incentive_platform.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except Exception as exc:
        from incentive_platform.outages import outage_of

        outage = outage_of(exc)
        if outage is None or "--traceback" in sys.argv:
            raise
        command = sys.argv[1] if len(sys.argv) > 1 else "manage.py"
        sys.stderr.write(f"{command}: {outage.sentence()}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
