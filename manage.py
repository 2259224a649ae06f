#!/usr/bin/env python
"""Django's command-line entry point.

A command that meets a backing service outage (database, cache, broker) or a settings error
(say, no SECRET_KEY with DEBUG off) prints one line naming it and exits with status 2;
`--traceback` shows the full traceback instead.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "incentive_platform.settings")
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(sys.argv)
    except Exception as exc:
        from django.core.exceptions import ImproperlyConfigured

        from incentive_platform.outages import outage_of

        if "--traceback" in sys.argv:
            raise
        if isinstance(exc, DatabaseError):  # an absent or unmigrated database: say the fix
            from incentive_platform.cli import database_not_ready

            message = database_not_ready(exc)
            if message is not None:
                sys.stderr.write(message + "\n")
                sys.exit(1)
        outage = outage_of(exc)
        if outage is None and not isinstance(exc, ImproperlyConfigured):
            raise
        command = sys.argv[1] if len(sys.argv) > 1 else "manage.py"
        sys.stderr.write(f"{command}: {outage.sentence() if outage else exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
