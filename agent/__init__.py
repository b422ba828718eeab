"""The sgw-reach agent: command line, planning, running and reporting."""
